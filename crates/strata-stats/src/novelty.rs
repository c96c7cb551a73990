//! Novelty decay test: is a treatment's effect in units' first days since
//! exposure larger than later?
//!
//! A new feature often draws attention that fades (a novelty effect), or
//! needs time to be learned (a primacy effect); either way the effect measured
//! over the whole experiment is not the long-run one. The analysis engine
//! measures the primary metric in two windows of each unit's exposure —
//! early (the first `novelty_days`) and late (afterwards) — and compares the
//! two relative lifts here. Relative, because the windows' baselines differ
//! (a unit's late window is often shorter than its first week, so a
//! constant lift has a smaller absolute effect there): comparing absolute
//! differences would call every steady effect a fading one.

use serde::{Deserialize, Serialize};

use crate::dist::norm_sf;
use crate::effect::RelativeLift;
use crate::error::{check_alpha, Result};

/// The outcome of [`novelty_decay`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoveltyDecay {
    /// `(lift_early − lift_late) / √(se_early² + se_late²)`.
    pub z: f64,
    /// Two-sided p-value of `z` under the standard normal distribution.
    pub p_value: f64,
    /// The early effect is significant at α, the late lift smaller in
    /// magnitude, and their difference significant at α.
    pub flagged: bool,
}

/// Tests whether the early window's relative lift differs from the late
/// window's; `early_p_value` is the early effect's own test (Welch).
///
/// A z-test of the difference of the two lifts (delta-method standard
/// errors), treating the windows as independent (they share units, so the
/// test is approximate: each unit's early and late values are positively
/// correlated for most metrics, which makes the test conservative). Returns
/// `None` when neither lift has a standard error (no test is possible);
/// `Err` only for an invalid `alpha`.
pub fn novelty_decay(
    early: &RelativeLift,
    early_p_value: f64,
    late: &RelativeLift,
    alpha: f64,
) -> Result<Option<NoveltyDecay>> {
    check_alpha("alpha", alpha)?;
    let (se, sl) = (early.std_error, late.std_error);
    if !(se > 0.0 || sl > 0.0) {
        return Ok(None);
    }
    let z = (early.estimate - late.estimate) / (se * se + sl * sl).sqrt();
    let p_value = 2.0 * norm_sf(z.abs());
    let flagged =
        p_value < alpha && early_p_value < alpha && late.estimate.abs() < early.estimate.abs();
    Ok(Some(NoveltyDecay {
        z,
        p_value,
        flagged,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::Interval;

    fn lift(estimate: f64, std_error: f64) -> RelativeLift {
        RelativeLift {
            estimate,
            std_error,
            ci: Interval {
                lower: estimate - 1.96 * std_error,
                upper: estimate + 1.96 * std_error,
            },
        }
    }

    #[test]
    fn a_fading_effect_is_flagged() {
        // z = (0.05 − 0.01) / √(0.01² + 0.01²) = 2√2 ≈ 2.828, p ≈ 0.00468
        // (scipy: 2 * norm.sf(2 * sqrt(2)) = 0.0046777349810472576).
        let d = novelty_decay(&lift(0.05, 0.01), 1e-6, &lift(0.01, 0.01), 0.05)
            .unwrap()
            .unwrap();
        assert!((d.z - 2.0 * 2f64.sqrt()).abs() < 1e-12, "{d:?}");
        assert!(
            (d.p_value - 0.004_677_734_981_047_258).abs() < 1e-15,
            "{d:?}"
        );
        assert!(d.flagged);
    }

    #[test]
    fn a_growing_or_insignificant_effect_is_not_flagged() {
        // Late larger than early: a significant difference, but no decay.
        let d = novelty_decay(&lift(0.01, 0.01), 0.3, &lift(0.05, 0.01), 0.05)
            .unwrap()
            .unwrap();
        assert!(d.z < 0.0 && d.p_value < 0.05 && !d.flagged, "{d:?}");
        // Early effect not significant at α.
        let d = novelty_decay(&lift(0.05, 0.01), 0.06, &lift(0.01, 0.01), 0.05)
            .unwrap()
            .unwrap();
        assert!(!d.flagged, "{d:?}");
        // Difference not significant.
        let d = novelty_decay(&lift(0.05, 0.02), 0.01, &lift(0.04, 0.02), 0.05)
            .unwrap()
            .unwrap();
        assert!(d.p_value > 0.05 && !d.flagged, "{d:?}");
    }

    #[test]
    fn degenerate_and_invalid_inputs() {
        let zero = lift(0.0, 0.0);
        assert_eq!(novelty_decay(&zero, 1.0, &zero, 0.05).unwrap(), None);
        assert!(novelty_decay(&zero, 1.0, &zero, 1.5).is_err());
        assert!(novelty_decay(&zero, 1.0, &zero, f64::NAN).is_err());
    }
}
