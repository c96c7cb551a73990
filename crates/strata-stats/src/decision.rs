//! Display tiers, warnings and the Simpson's paradox check.
//!
//! The platform does not declare winners; it labels how strong the evidence is
//! and warns when a result should not be trusted or acted on.
//!
//! * Tier: `high` when p < 0.01, `moderate` when p < 0.05, else
//!   `not_significant` (the p-value is the adjusted one for non-primary metrics).
//! * Warnings: `srm` (the sample ratio check failed: nothing in the experiment
//!   is trustworthy), `underpowered` (a variant has fewer units than the
//!   pre-registered sample size), `borderline` (0.01 ≤ p < 0.05: a result that
//!   often fails to replicate), `insufficient_data` (no test was possible),
//!   `simpsons_paradox` (segments disagree with the aggregate).
//!
//! # Simpson's paradox
//! An aggregate effect can have the opposite sign to the effect within most
//! segments when the traffic mix differs between segments and variants. Given
//! the aggregate effect and per-segment effects, the check considers the
//! segments with at least `min_segment_n` units (default 1000) and flags when
//! more than half of them have an effect of the opposite sign.

use serde::{Deserialize, Serialize};

use crate::error::{finite, Result};

/// Default minimum segment size for the Simpson's paradox check.
pub const DEFAULT_MIN_SEGMENT_N: u64 = 1000;

/// How strong the evidence is, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Tier {
    /// p < 0.01.
    High,
    /// 0.01 ≤ p < 0.05.
    Moderate,
    /// p ≥ 0.05, or no test possible.
    NotSignificant,
}

/// Tier for a p-value (`None`, for no test, is not significant).
pub fn tier(p_value: Option<f64>) -> Tier {
    match p_value {
        Some(p) if p < 0.01 => Tier::High,
        Some(p) if p < 0.05 => Tier::Moderate,
        _ => Tier::NotSignificant,
    }
}

/// A reason to distrust or hold back on a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// Sample ratio mismatch: observed unit counts do not match the configured weights.
    Srm,
    /// A variant has fewer units than the pre-registered sample size.
    Underpowered,
    /// The p-value is in [0.01, 0.05).
    Borderline,
    /// The data could not support a test.
    InsufficientData,
    /// Most sizeable segments have the opposite sign to the aggregate effect.
    SimpsonsParadox,
}

/// Whether a p-value is borderline (0.01 ≤ p < 0.05).
pub fn is_borderline(p_value: f64) -> bool {
    (0.01..0.05).contains(&p_value)
}

/// One segment's effect estimate and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentEffect {
    /// Effect (treatment − control) within the segment.
    pub effect: f64,
    /// Units in the segment (both variants).
    pub n: u64,
}

/// Result of the Simpson's paradox check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpsonCheck {
    /// Segments with at least `min_segment_n` units.
    pub eligible_segments: usize,
    /// Eligible segments whose effect has the opposite sign to the aggregate.
    pub opposite_segments: usize,
    /// `opposite_segments > eligible_segments / 2`.
    pub flagged: bool,
}

/// Flags when more than half of the segments with at least `min_segment_n`
/// units have the opposite sign to `aggregate`. A zero aggregate or segment
/// effect has no sign and never counts as opposite.
pub fn simpsons_paradox(
    aggregate: f64,
    segments: &[SegmentEffect],
    min_segment_n: u64,
) -> Result<SimpsonCheck> {
    finite("aggregate", aggregate)?;
    let mut eligible = 0;
    let mut opposite = 0;
    for s in segments {
        finite("segments.effect", s.effect)?;
        if s.n >= min_segment_n {
            eligible += 1;
            if s.effect * aggregate < 0.0 {
                opposite += 1;
            }
        }
    }
    Ok(SimpsonCheck {
        eligible_segments: eligible,
        opposite_segments: opposite,
        flagged: 2 * opposite > eligible,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_borderline() {
        assert_eq!(tier(Some(0.009)), Tier::High);
        assert_eq!(tier(Some(0.01)), Tier::Moderate);
        assert_eq!(tier(Some(0.0499)), Tier::Moderate);
        assert_eq!(tier(Some(0.05)), Tier::NotSignificant);
        assert_eq!(tier(None), Tier::NotSignificant);
        assert!(is_borderline(0.01) && !is_borderline(0.05) && !is_borderline(0.009));
    }

    #[test]
    fn simpson_counts_only_big_segments() {
        let seg = |effect, n| SegmentEffect { effect, n };
        let s = [
            seg(-1.0, 5000),
            seg(-0.5, 2000),
            seg(2.0, 1000),
            seg(-3.0, 10),
        ];
        let c = simpsons_paradox(0.4, &s, DEFAULT_MIN_SEGMENT_N).unwrap();
        assert_eq!(
            (c.eligible_segments, c.opposite_segments, c.flagged),
            (3, 2, true)
        );
        // Exactly half is not more than half.
        let c = simpsons_paradox(0.4, &s[1..], DEFAULT_MIN_SEGMENT_N).unwrap();
        assert!(!c.flagged);
        assert!(!simpsons_paradox(0.0, &s, 1000).unwrap().flagged);
        assert!(!simpsons_paradox(1.0, &[], 1000).unwrap().flagged);
        assert!(simpsons_paradox(f64::NAN, &s, 1000).is_err());
    }
}
