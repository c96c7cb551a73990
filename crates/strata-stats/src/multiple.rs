//! Multiple-testing corrections.
//!
//! Testing many secondary metrics, or several treatments, inflates the chance
//! of at least one false positive. Given `m` p-values `p_(1) ≤ … ≤ p_(m)`:
//!
//! * **Bonferroni** controls the family-wise error rate (FWER):
//!   `p̃_i = min(1, m·p_i)`.
//! * **Holm** (1979), uniformly more powerful and still FWER-controlling:
//!   `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))`.
//! * **Benjamini–Hochberg** (1995) controls the false discovery rate under
//!   independence or positive dependence:
//!   `p̃_(i) = min_{j ≥ i} min(1, m·p_(j)/j)`.
//!
//! These match `statsmodels.stats.multitest.multipletests` with methods
//! `bonferroni`, `holm` and `fdr_bh`. The primary metric is pre-registered
//! and reported unadjusted; corrections apply to the family of the others.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A multiple-testing correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Correction {
    /// No adjustment.
    None,
    /// Bonferroni (FWER).
    Bonferroni,
    /// Holm step-down (FWER).
    #[default]
    Holm,
    /// Benjamini–Hochberg step-up (FDR).
    BenjaminiHochberg,
}

/// Adjusted p-values in the input order.
pub fn adjust_p_values(p_values: &[f64], method: Correction) -> Result<Vec<f64>> {
    for &p in p_values {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::OutOfRange {
                field: "p_values",
                expected: "in [0, 1]",
                value: p,
            });
        }
    }
    let m = p_values.len();
    let mf = m as f64;
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut out = vec![0.0; m];
    match method {
        Correction::None => out.copy_from_slice(p_values),
        Correction::Bonferroni => {
            for (o, &p) in out.iter_mut().zip(p_values) {
                *o = (mf * p).min(1.0);
            }
        }
        Correction::Holm => {
            let mut running = 0.0_f64;
            for (rank, &i) in order.iter().enumerate() {
                running = running.max(((mf - rank as f64) * p_values[i]).min(1.0));
                out[i] = running;
            }
        }
        Correction::BenjaminiHochberg => {
            let mut running = 1.0_f64;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min(mf * p_values[i] / (rank + 1) as f64);
                out[i] = running;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_example() {
        let p = [0.01, 0.04, 0.03, 0.005];
        assert_eq!(
            adjust_p_values(&p, Correction::Bonferroni).unwrap(),
            vec![0.04, 0.16, 0.12, 0.02]
        );
        let holm = adjust_p_values(&p, Correction::Holm).unwrap();
        for (a, b) in holm.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((a - b).abs() < 1e-15);
        }
        let bh = adjust_p_values(&p, Correction::BenjaminiHochberg).unwrap();
        for (a, b) in bh.iter().zip([0.02, 0.04, 0.04, 0.02]) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!(adjust_p_values(&[], Correction::Holm).unwrap().is_empty());
        assert!(adjust_p_values(&[f64::NAN], Correction::Holm).is_err());
    }
}
