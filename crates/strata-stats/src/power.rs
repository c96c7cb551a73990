//! Power, sample size, minimum detectable effect and duration.
//!
//! For a two-sided z-test of a difference in means with equal allocation, `n`
//! units per variant and standardised effect `d = δ/σ`, the power is
//!
//! ```text
//! power(n) = Φ̄(z_{1−α/2} − d·√(n/2)) + Φ(−z_{1−α/2} − d·√(n/2))
//! ```
//!
//! (both rejection regions counted). This is exactly
//! `statsmodels.stats.power.NormalIndPower` with `ratio = 1`, which the
//! reference fixtures check. The sample size solves `power(n) = 1 − β`; it
//! starts from the familiar closed form `n = 2(z_{1−α/2} + z_{1−β})²/d²` and
//! is refined by Newton's method to include the opposite tail. The minimum
//! detectable effect inverts the same equation for `d` at a given `n`.
//!
//! * A **relative** MDE `r` is the absolute effect `δ = r·μ₀` for baseline mean μ₀.
//! * A **binomial** metric with baseline rate `p` has `σ² = p(1 − p)`.
//! * **Duration** is `⌈n·k / (daily eligible units × allocated fraction)⌉` days
//!   for `k` variants.
//!
//! The z-test (rather than t) is the right model at experiment sizes, where
//! the two differ by less than one unit in `n` once `n` exceeds a few hundred.

use serde::{Deserialize, Serialize};

use crate::dist::{norm_cdf, norm_isf, norm_pdf, norm_sf};
use crate::error::{check_alpha, finite, Error, Result};

/// The baseline (control) distribution of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Baseline {
    /// A continuous metric with its mean and per-unit variance.
    Mean {
        /// Baseline mean.
        mean: f64,
        /// Per-unit variance.
        variance: f64,
    },
    /// A binomial (0/1) metric with its baseline rate; variance is p(1 − p).
    Rate {
        /// Baseline conversion rate in (0, 1).
        rate: f64,
    },
}

impl Baseline {
    fn mean_sd(&self) -> Result<(f64, f64)> {
        match *self {
            Baseline::Mean { mean, variance } => {
                finite("mean", mean)?;
                finite("variance", variance)?;
                if !(variance > 0.0) {
                    return Err(Error::OutOfRange {
                        field: "variance",
                        expected: "positive",
                        value: variance,
                    });
                }
                Ok((mean, variance.sqrt()))
            }
            Baseline::Rate { rate } => {
                if !(rate > 0.0 && rate < 1.0) {
                    return Err(Error::OutOfRange {
                        field: "rate",
                        expected: "in (0, 1)",
                        value: rate,
                    });
                }
                Ok((rate, (rate * (1.0 - rate)).sqrt()))
            }
        }
    }
}

/// A minimum detectable effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Mde {
    /// Absolute difference in means.
    Absolute(f64),
    /// Relative difference: a fraction of the baseline mean (0.02 = +2 %).
    Relative(f64),
}

/// Required sample size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleSize {
    /// Units per variant, rounded up.
    pub per_variant: u64,
    /// The unrounded solution of the power equation.
    pub per_variant_exact: f64,
    /// Absolute effect used.
    pub absolute_effect: f64,
    /// Standardised effect `d = δ/σ`.
    pub effect_size: f64,
}

/// Minimum detectable effect at a given sample size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectableEffect {
    /// Standardised effect `d`.
    pub effect_size: f64,
    /// Absolute effect `d·σ`.
    pub absolute: f64,
    /// Relative to the baseline mean; `None` when the baseline mean is zero.
    pub relative: Option<f64>,
}

fn check_power(power: f64) -> Result<f64> {
    finite("power", power)?;
    if power > 0.0 && power < 1.0 {
        Ok(power)
    } else {
        Err(Error::OutOfRange {
            field: "power",
            expected: "in (0, 1)",
            value: power,
        })
    }
}

/// Power of the two-sided z-test with `n` units per variant and standardised effect `d`.
pub fn power(effect_size: f64, n_per_variant: f64, alpha: f64) -> Result<f64> {
    check_alpha("alpha", alpha)?;
    finite("effect_size", effect_size)?;
    finite("n_per_variant", n_per_variant)?;
    if !(n_per_variant > 0.0) {
        return Err(Error::OutOfRange {
            field: "n_per_variant",
            expected: "positive",
            value: n_per_variant,
        });
    }
    Ok(power_unchecked(
        effect_size.abs(),
        n_per_variant,
        norm_isf(alpha / 2.0),
    ))
}

fn power_unchecked(d: f64, n: f64, z: f64) -> f64 {
    let s = d * (n / 2.0).sqrt();
    norm_sf(z - s) + norm_cdf(-z - s)
}

/// Units per variant needed to detect `mde` with the given power at two-sided `alpha`.
pub fn sample_size(baseline: Baseline, mde: Mde, alpha: f64, power: f64) -> Result<SampleSize> {
    check_alpha("alpha", alpha)?;
    check_power(power)?;
    let (mean, sd) = baseline.mean_sd()?;
    let delta = match mde {
        Mde::Absolute(d) => finite("mde", d)?,
        Mde::Relative(r) => finite("mde", r)? * mean,
    };
    if delta == 0.0 {
        return Err(Error::OutOfRange {
            field: "mde",
            expected: "non-zero (and a non-zero baseline mean for a relative mde)",
            value: 0.0,
        });
    }
    let d = (delta / sd).abs();
    let z = norm_isf(alpha / 2.0);
    if power <= alpha {
        return Err(Error::OutOfRange {
            field: "power",
            expected: "greater than alpha",
            value: power,
        });
    }
    // Work in s = d·√(n/2): power(s) = Φ̄(z − s) + Φ(−z − s), increasing in s.
    let mut s = z + norm_isf(1.0 - power);
    for _ in 0..50 {
        let f = norm_sf(z - s) + norm_cdf(-z - s) - power;
        let df = norm_pdf(z - s) - norm_pdf(z + s);
        let step = f / df;
        s -= step;
        if step.abs() <= 1e-15 * s.abs() {
            break;
        }
    }
    let n = 2.0 * (s / d) * (s / d);
    Ok(SampleSize {
        per_variant: n.ceil() as u64,
        per_variant_exact: n,
        absolute_effect: delta.abs(),
        effect_size: d,
    })
}

/// The smallest effect detectable with `n_per_variant` units per variant.
pub fn minimum_detectable_effect(
    baseline: Baseline,
    n_per_variant: f64,
    alpha: f64,
    power: f64,
) -> Result<DetectableEffect> {
    check_alpha("alpha", alpha)?;
    check_power(power)?;
    let (mean, sd) = baseline.mean_sd()?;
    finite("n_per_variant", n_per_variant)?;
    if !(n_per_variant > 0.0) {
        return Err(Error::OutOfRange {
            field: "n_per_variant",
            expected: "positive",
            value: n_per_variant,
        });
    }
    let unit = sample_size(
        Baseline::Mean {
            mean: 0.0,
            variance: 1.0,
        },
        Mde::Absolute(1.0),
        alpha,
        power,
    )?;
    // n scales as 1/d², so d = √(n₁/n) with n₁ the size needed for d = 1.
    let d = (unit.per_variant_exact / n_per_variant).sqrt();
    let absolute = d * sd;
    Ok(DetectableEffect {
        effect_size: d,
        absolute,
        relative: (mean != 0.0).then(|| absolute / mean.abs()),
    })
}

/// Days needed to enrol `n_per_variant` units in each of `variants` variants.
///
/// `daily_traffic` is the number of eligible units per day and `allocation`
/// the fraction of them entering the experiment (all variants together).
pub fn duration_days(
    n_per_variant: u64,
    variants: u32,
    daily_traffic: f64,
    allocation: f64,
) -> Result<u64> {
    finite("daily_traffic", daily_traffic)?;
    finite("allocation", allocation)?;
    if !(daily_traffic > 0.0) {
        return Err(Error::OutOfRange {
            field: "daily_traffic",
            expected: "positive",
            value: daily_traffic,
        });
    }
    if !(allocation > 0.0 && allocation <= 1.0) {
        return Err(Error::OutOfRange {
            field: "allocation",
            expected: "in (0, 1]",
            value: allocation,
        });
    }
    if variants < 2 {
        return Err(Error::OutOfRange {
            field: "variants",
            expected: "at least 2",
            value: f64::from(variants),
        });
    }
    Ok((n_per_variant as f64 * f64::from(variants) / (daily_traffic * allocation)).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_is_close_and_round_trips() {
        let b = Baseline::Mean {
            mean: 10.0,
            variance: 4.0,
        };
        let s = sample_size(b, Mde::Relative(0.05), 0.05, 0.8).unwrap();
        // d = 0.5/2 = 0.25; classic n = 2·(1.96 + 0.8416)²/0.0625 ≈ 251.2.
        assert!(
            (s.per_variant_exact - 251.16).abs() < 0.05,
            "{}",
            s.per_variant_exact
        );
        assert_eq!(s.per_variant, 252);
        let p = power(s.effect_size, s.per_variant_exact, 0.05).unwrap();
        assert!((p - 0.8).abs() < 1e-12);
        let m = minimum_detectable_effect(b, s.per_variant_exact, 0.05, 0.8).unwrap();
        assert!((m.absolute - 0.5).abs() < 1e-12);
        assert!((m.relative.unwrap() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn duration_and_bad_input() {
        assert_eq!(duration_days(10_000, 2, 1000.0, 0.5).unwrap(), 40);
        assert_eq!(duration_days(10_001, 2, 1000.0, 0.5).unwrap(), 41);
        assert!(duration_days(1, 2, 0.0, 0.5).is_err());
        assert!(duration_days(1, 2, 10.0, 1.5).is_err());
        assert!(sample_size(Baseline::Rate { rate: 1.0 }, Mde::Absolute(0.1), 0.05, 0.8).is_err());
        assert!(sample_size(Baseline::Rate { rate: 0.1 }, Mde::Absolute(0.0), 0.05, 0.8).is_err());
        assert!(sample_size(Baseline::Rate { rate: 0.1 }, Mde::Absolute(0.01), 0.05, 1.0).is_err());
        assert!(power(0.1, -3.0, 0.05).is_err());
    }
}
