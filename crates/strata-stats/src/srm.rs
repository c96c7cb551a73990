//! Sample ratio mismatch (SRM) check.
//!
//! If assignment works, the observed unit counts `o_i` follow the configured
//! weights `w_i`. Pearson's chi-squared goodness-of-fit statistic
//!
//! ```text
//! χ² = Σ (o_i − e_i)² / e_i,   e_i = N·w_i/Σw,   df = k − 1
//! ```
//!
//! is referred to the chi-squared distribution with k − 1 degrees of freedom.
//! A mismatch (p < `srm_alpha`, default 0.001) means the assignment or the
//! logging is broken and no effect estimate from the experiment can be
//! trusted (Fabijan et al. 2019, "Diagnosing sample ratio mismatch in online
//! controlled experiments", KDD). The strict default threshold keeps false
//! alarms rare when the check runs on every experiment every day.

use serde::{Deserialize, Serialize};

use crate::dist::chi2_sf;
use crate::error::{check_alpha, finite, Error, Result};

/// Default SRM significance threshold.
pub const DEFAULT_SRM_ALPHA: f64 = 0.001;

/// Result of the SRM check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrmResult {
    /// Pearson chi-squared statistic.
    pub chi_squared: f64,
    /// Degrees of freedom, k − 1.
    pub df: u32,
    /// p-value.
    pub p_value: f64,
    /// Expected counts under the configured weights.
    pub expected: Vec<f64>,
    /// Threshold used.
    pub srm_alpha: f64,
    /// `p_value < srm_alpha`.
    pub mismatch: bool,
}

/// Tests observed unit counts against configured (not necessarily normalised) weights.
///
/// With no units at all the check is vacuous: p = 1 and no mismatch.
pub fn srm_check(observed: &[u64], weights: &[f64], srm_alpha: f64) -> Result<SrmResult> {
    check_alpha("srm_alpha", srm_alpha)?;
    if observed.len() != weights.len() {
        return Err(Error::LengthMismatch {
            field: "weights",
            expected: observed.len(),
            actual: weights.len(),
        });
    }
    if observed.len() < 2 {
        return Err(Error::Invalid {
            field: "observed",
            reason: "at least two variants are needed",
        });
    }
    let mut total_w = 0.0;
    for &w in weights {
        finite("weights", w)?;
        if !(w > 0.0) {
            return Err(Error::OutOfRange {
                field: "weights",
                expected: "positive",
                value: w,
            });
        }
        total_w += w;
    }
    let n: f64 = observed.iter().map(|&o| o as f64).sum();
    let expected: Vec<f64> = weights.iter().map(|w| n * w / total_w).collect();
    let df = (observed.len() - 1) as u32;
    if n == 0.0 {
        return Ok(SrmResult {
            chi_squared: 0.0,
            df,
            p_value: 1.0,
            expected,
            srm_alpha,
            mismatch: false,
        });
    }
    let chi_squared: f64 = observed
        .iter()
        .zip(&expected)
        .map(|(&o, &e)| {
            let d = o as f64 - e;
            d * d / e
        })
        .sum();
    let p_value = chi2_sf(chi_squared, df);
    Ok(SrmResult {
        chi_squared,
        df,
        p_value,
        expected,
        srm_alpha,
        mismatch: p_value < srm_alpha,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_a_clear_mismatch_only() {
        let ok = srm_check(&[5000, 5050], &[0.5, 0.5], DEFAULT_SRM_ALPHA).unwrap();
        assert!(!ok.mismatch);
        let bad = srm_check(&[5000, 5400], &[1.0, 1.0], DEFAULT_SRM_ALPHA).unwrap();
        assert!(bad.mismatch && bad.p_value < 1e-3);
        // Unequal weights: 1:3 observed 1:3 is fine.
        assert!(
            !srm_check(&[2500, 7500], &[25.0, 75.0], 0.001)
                .unwrap()
                .mismatch
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(srm_check(&[1, 2], &[1.0], 0.001).is_err());
        assert!(srm_check(&[1], &[1.0], 0.001).is_err());
        assert!(srm_check(&[1, 2], &[1.0, 0.0], 0.001).is_err());
        assert!(srm_check(&[1, 2], &[1.0, f64::NAN], 0.001).is_err());
        assert!(srm_check(&[1, 2], &[1.0, 1.0], 0.0).is_err());
        assert_eq!(srm_check(&[0, 0], &[1.0, 1.0], 0.001).unwrap().p_value, 1.0);
    }
}
