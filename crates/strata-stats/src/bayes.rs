//! Optional Bayesian summary of a difference in means (opt-in).
//!
//! Under the normal approximation the estimated difference `Δ̂` with
//! standard error `se` is the likelihood `Δ̂ | δ ~ N(δ, se²)`. With a normal
//! prior `δ ~ N(μ₀, τ²)` the posterior is normal with
//!
//! ```text
//! precision = 1/se² + 1/τ²,   mean m = (Δ̂/se² + μ₀/τ²)/precision,   sd s = precision^{−½}
//! ```
//!
//! and with the default flat (improper) prior simply `N(Δ̂, se²)`. Reported:
//!
//! * `P(treatment beats control) = P(δ > 0) = Φ(m/s)`;
//! * expected loss of shipping treatment, `E[max(0, −δ)] = s·φ(m/s) − m·Φ(−m/s)`,
//!   and of keeping control, `E[max(0, δ)] = s·φ(m/s) + m·Φ(m/s)`
//!   (Stucchio 2015, "Bayesian A/B testing at VWO").
//!
//! "Beats" means a larger metric; for metrics where lower is better read the
//! complement. This summary is descriptive: the decision rules of the
//! platform are the frequentist ones.

use serde::{Deserialize, Serialize};

use crate::dist::{norm_cdf, norm_pdf};
use crate::error::{finite, Error, Result};

/// A normal prior on the treatment effect δ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormalPrior {
    /// Prior mean μ₀ (usually 0: no expected effect).
    pub mean: f64,
    /// Prior standard deviation τ (> 0).
    pub std_dev: f64,
}

/// Posterior summary of the treatment effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BayesSummary {
    /// Posterior mean of δ.
    pub posterior_mean: f64,
    /// Posterior standard deviation of δ.
    pub posterior_std_dev: f64,
    /// `P(δ > 0)`.
    pub prob_treatment_better: f64,
    /// Expected loss of choosing treatment, `E[max(0, −δ)]`.
    pub expected_loss_treatment: f64,
    /// Expected loss of choosing control, `E[max(0, δ)]`.
    pub expected_loss_control: f64,
}

/// Posterior summary from an estimated difference and its standard error;
/// `prior = None` is the flat prior.
pub fn bayes_summary(
    difference: f64,
    std_error: f64,
    prior: Option<NormalPrior>,
) -> Result<BayesSummary> {
    finite("difference", difference)?;
    finite("std_error", std_error)?;
    if !(std_error > 0.0) {
        return Err(Error::OutOfRange {
            field: "std_error",
            expected: "positive",
            value: std_error,
        });
    }
    let (m, s) = match prior {
        None => (difference, std_error),
        Some(p) => {
            finite("prior.mean", p.mean)?;
            finite("prior.std_dev", p.std_dev)?;
            if !(p.std_dev > 0.0) {
                return Err(Error::OutOfRange {
                    field: "prior.std_dev",
                    expected: "positive",
                    value: p.std_dev,
                });
            }
            let (wl, wp) = (1.0 / (std_error * std_error), 1.0 / (p.std_dev * p.std_dev));
            let prec = wl + wp;
            ((difference * wl + p.mean * wp) / prec, prec.sqrt().recip())
        }
    };
    let z = m / s;
    Ok(BayesSummary {
        posterior_mean: m,
        posterior_std_dev: s,
        prob_treatment_better: norm_cdf(z),
        expected_loss_treatment: s * norm_pdf(z) - m * norm_cdf(-z),
        expected_loss_control: s * norm_pdf(z) + m * norm_cdf(z),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_shrunk() {
        let b = bayes_summary(0.0, 1.0, None).unwrap();
        assert!((b.prob_treatment_better - 0.5).abs() < 1e-15);
        assert!((b.expected_loss_control - b.expected_loss_treatment).abs() < 1e-15);
        // The losses differ by exactly the posterior mean.
        let c = bayes_summary(0.3, 0.2, None).unwrap();
        assert!((c.expected_loss_control - c.expected_loss_treatment - 0.3).abs() < 1e-15);
        let p = bayes_summary(
            0.3,
            0.2,
            Some(NormalPrior {
                mean: 0.0,
                std_dev: 0.2,
            }),
        )
        .unwrap();
        assert!((p.posterior_mean - 0.15).abs() < 1e-15);
        assert!(bayes_summary(0.3, 0.0, None).is_err());
    }
}
