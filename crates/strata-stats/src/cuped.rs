//! CUPED: variance reduction with a pre-experiment covariate.
//!
//! With `x` each unit's pre-experiment value of the metric (Deng, Xu, Kohavi &
//! Walker 2013, "Improving the sensitivity of online controlled experiments by
//! utilizing pre-experiment data", WSDM), the adjusted metric
//!
//! ```text
//! y' = y − θ·(x − x̄),   θ = cov(x, y) / var(x)
//! ```
//!
//! has the same expectation difference between variants (randomisation makes
//! `E[x]` equal across them) and variance `var(y)·(1 − ρ²)` when θ is the
//! regression slope. θ and `x̄` are estimated once, pooled over all variants
//! (the merged statistics of every variant), so that every variant is
//! adjusted by the same amount. Per variant, from sufficient statistics:
//!
//! ```text
//! ȳ'_v   = ȳ_v − θ·(x̄_v − x̄)
//! s'²_v  = s²_y,v − 2θ·s_xy,v + θ²·s²_x,v
//! ```
//!
//! and the Welch test runs on `(n_v, ȳ'_v, s'²_v)`. The reported variance
//! reduction is `1 − s'²/s²_y`, per variant and pooled. Treating θ as known
//! ignores its own O(1/n) estimation error, as is standard.

use serde::{Deserialize, Serialize};

use crate::effect::Sample;
use crate::error::{Error, Result};
use crate::moments::CupedStats;

/// One variant after CUPED adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CupedVariant {
    /// Number of units.
    pub n: u64,
    /// Unadjusted mean ȳ.
    pub mean: f64,
    /// Adjusted mean ȳ − θ(x̄_v − x̄).
    pub adjusted_mean: f64,
    /// Unadjusted per-unit variance; `None` with fewer than two units.
    pub variance: Option<f64>,
    /// Adjusted per-unit variance; `None` with fewer than two units.
    pub adjusted_variance: Option<f64>,
    /// `1 − adjusted_variance / variance`; `None` when undefined.
    pub variance_reduction: Option<f64>,
}

impl CupedVariant {
    /// The adjusted sample for testing, or `None` with fewer than two units.
    pub fn adjusted_sample(&self) -> Option<Sample> {
        self.adjusted_variance.map(|variance| Sample {
            n: self.n,
            mean: self.adjusted_mean,
            variance,
        })
    }
}

/// CUPED adjustment of all variants of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CupedAdjustment {
    /// Pooled regression coefficient θ = cov(x, y)/var(x); 0 when the
    /// covariate has no variance.
    pub theta: f64,
    /// Pooled covariate mean x̄.
    pub covariate_mean: f64,
    /// Pooled variance reduction `1 − var(y')/var(y)` over all units.
    pub variance_reduction: Option<f64>,
    /// Per-variant adjusted statistics, in input order.
    pub variants: Vec<CupedVariant>,
}

/// Adjusts every variant's metric with the pooled CUPED coefficient.
pub fn cuped(variants: &[CupedStats]) -> Result<CupedAdjustment> {
    if variants.is_empty() {
        return Err(Error::Invalid {
            field: "variants",
            reason: "no variants given",
        });
    }
    let mut pooled = CupedStats::new();
    for v in variants {
        v.validate()?;
        pooled.merge(v);
    }
    let theta = if pooled.m2_x() > 0.0 {
        pooled.c_xy() / pooled.m2_x()
    } else {
        0.0
    };
    let x_bar = pooled.mean_x();
    let adjusted_m2 =
        |s: &CupedStats| (s.m2_y() - 2.0 * theta * s.c_xy() + theta * theta * s.m2_x()).max(0.0);
    let reduction =
        |s: &CupedStats| (s.n() >= 2 && s.m2_y() > 0.0).then(|| 1.0 - adjusted_m2(s) / s.m2_y());
    let out = variants
        .iter()
        .map(|s| {
            let dof = s.n().saturating_sub(1) as f64;
            let has_var = s.n() >= 2;
            CupedVariant {
                n: s.n(),
                mean: s.mean_y(),
                adjusted_mean: s.mean_y() - theta * (s.mean_x() - x_bar),
                variance: has_var.then(|| s.m2_y() / dof),
                adjusted_variance: has_var.then(|| adjusted_m2(s) / dof),
                variance_reduction: reduction(s),
            }
        })
        .collect();
    Ok(CupedAdjustment {
        theta,
        covariate_mean: x_bar,
        variance_reduction: reduction(&pooled),
        variants: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_predictive_covariate_removes_all_variance() {
        let x: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 + 2.0 * v).collect();
        let s = CupedStats::from_values(&y, &x).unwrap();
        let a = cuped(&[s, s]).unwrap();
        assert!((a.theta - 2.0).abs() < 1e-12);
        assert!(a.variants[0].adjusted_variance.unwrap() < 1e-9);
        assert!((a.variance_reduction.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_covariate_leaves_metric_unchanged() {
        let y = [1.0, 2.0, 4.0];
        let s = CupedStats::from_values(&y, &[5.0; 3]).unwrap();
        let a = cuped(&[s]).unwrap();
        assert_eq!(a.theta, 0.0);
        assert_eq!(a.variants[0].adjusted_mean, a.variants[0].mean);
        assert_eq!(a.variants[0].variance_reduction, Some(0.0));
        assert!(cuped(&[]).is_err());
        let one = cuped(&[CupedStats::from_values(&[1.0], &[1.0]).unwrap()]).unwrap();
        assert!(one.variants[0].adjusted_sample().is_none());
    }
}
