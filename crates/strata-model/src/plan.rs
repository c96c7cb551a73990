//! The analysis settings an experiment pre-registers besides its metrics:
//! which variant a unit is analysed in, the multiple-testing correction,
//! CUPED, the segments to break results down by, the minimum duration before
//! a `ship` decision, the opt-in Bayesian summary and what a failing sample
//! ratio mismatch check does.
//!
//! They are fixed before the first look, like the hypothesis and the primary
//! metric: choosing the correction or the segments after seeing the data is
//! how a test finds the effect it hoped for. The control plane stores them
//! with the experiment and freezes them when it leaves draft; the analysis
//! engine runs with them ([`crate::ExperimentDefinition`]) and a spec file
//! states them with the same names and the same checks.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Which variant a unit is analysed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMode {
    /// Intent-to-treat: the assigned variant; opted-out units included.
    #[default]
    Itt,
    /// Per-protocol: the served variant; opted-out units dropped.
    PerProtocol,
}

impl AnalysisMode {
    /// The name in documents (`itt`, `per_protocol`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisMode::Itt => "itt",
            AnalysisMode::PerProtocol => "per_protocol",
        }
    }
}

/// Multiple-testing correction over the non-primary metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleTesting {
    /// No adjustment.
    None,
    /// Bonferroni (family-wise error rate).
    Bonferroni,
    /// Holm step-down (family-wise error rate, uniformly more powerful than
    /// Bonferroni).
    Holm,
    /// Benjamini–Hochberg (false discovery rate).
    #[default]
    BenjaminiHochberg,
}

/// CUPED variance reduction: each metric's own value over a pre-period is
/// the covariate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CupedSpec {
    /// Length of the pre-period `[start − days, start)`, in days.
    pub pre_period_days: u32,
}

/// What a look whose sample ratio mismatch check fails does, besides
/// marking its results untrustworthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SrmAction {
    /// Record and report it (the audit log, the results' health checks,
    /// metrics); the experiment keeps running.
    #[default]
    Alert,
    /// Also pause the experiment: a broken assignment or logging path stops
    /// collecting data that cannot be analysed.
    Pause,
}

impl SrmAction {
    /// The name in documents (`alert`, `pause`).
    pub fn as_str(self) -> &'static str {
        match self {
            SrmAction::Alert => "alert",
            SrmAction::Pause => "pause",
        }
    }
}

/// Default minimum duration before a `ship` decision, in days: one whole
/// week, so that every weekday is in the data.
pub const DEFAULT_MIN_DURATION_DAYS: u32 = 7;
/// Longest minimum duration, in days.
pub const MAX_MIN_DURATION_DAYS: u32 = 365;

/// The default of `min_duration_days` in documents.
pub fn default_min_duration_days() -> u32 {
    DEFAULT_MIN_DURATION_DAYS
}

/// Checks a minimum duration: 1 to [`MAX_MIN_DURATION_DAYS`] days.
pub fn check_min_duration(days: u32) -> Result<(), ModelError> {
    if days == 0 || days > MAX_MIN_DURATION_DAYS {
        return Err(ModelError::Invalid {
            field: "min_duration_days".into(),
            reason: format!("must be between 1 and {MAX_MIN_DURATION_DAYS} days, got {days}"),
        });
    }
    Ok(())
}

/// Longest CUPED pre-period, in days.
pub const MAX_PRE_PERIOD_DAYS: u32 = 365;
/// Most segment attributes an analysis breaks results down by.
pub const MAX_SEGMENTS: usize = 16;
/// Longest segment attribute name, in bytes (an attribute key's limit).
pub const SEGMENT_MAX_BYTES: usize = 128;

/// Checks a CUPED setting: a pre-period of 1 to [`MAX_PRE_PERIOD_DAYS`] days.
pub fn check_cuped(cuped: Option<&CupedSpec>) -> Result<(), ModelError> {
    match cuped {
        Some(c) if c.pre_period_days == 0 || c.pre_period_days > MAX_PRE_PERIOD_DAYS => {
            Err(ModelError::Invalid {
                field: "cuped.pre_period_days".into(),
                reason: format!(
                    "must be between 1 and {MAX_PRE_PERIOD_DAYS} days, got {}",
                    c.pre_period_days
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Checks segment attribute names: at most [`MAX_SEGMENTS`], each non-empty,
/// at most [`SEGMENT_MAX_BYTES`] and distinct.
pub fn check_segments(segments: &[String]) -> Result<(), ModelError> {
    if segments.len() > MAX_SEGMENTS {
        return Err(ModelError::Invalid {
            field: "segments".into(),
            reason: format!(
                "at most {MAX_SEGMENTS} segment attributes, got {}",
                segments.len()
            ),
        });
    }
    for (i, s) in segments.iter().enumerate() {
        let reason = if s.trim().is_empty() {
            "must be a non-empty attribute name".to_owned()
        } else if s.len() > SEGMENT_MAX_BYTES {
            format!("must be at most {SEGMENT_MAX_BYTES} bytes")
        } else if segments[..i].contains(s) {
            format!("attribute {s:?} is listed twice")
        } else {
            continue;
        };
        return Err(ModelError::Invalid {
            field: format!("segments[{i}]"),
            reason,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_those_of_the_documents() {
        let m: MultipleTesting = serde_json::from_str(r#""benjamini_hochberg""#).unwrap();
        assert_eq!(m, MultipleTesting::default());
        let a: AnalysisMode = serde_json::from_str(r#""per_protocol""#).unwrap();
        assert_eq!(a.as_str(), "per_protocol");
        assert!(serde_json::from_str::<CupedSpec>(r#"{"pre_period_days": 7, "x": 1}"#).is_err());
    }

    #[test]
    fn minimum_durations_are_bounded() {
        assert!(check_min_duration(DEFAULT_MIN_DURATION_DAYS).is_ok());
        assert!(check_min_duration(365).is_ok());
        for days in [0, 366] {
            let e = check_min_duration(days).unwrap_err();
            assert_eq!(e.field(), "min_duration_days");
            assert!(e.to_string().contains(&days.to_string()), "{e}");
        }
        let a: SrmAction = serde_json::from_str(r#""pause""#).unwrap();
        assert_eq!(a.as_str(), "pause");
        assert_eq!(SrmAction::default(), SrmAction::Alert);
        assert!(serde_json::from_str::<SrmAction>(r#""stop""#).is_err());
    }

    #[test]
    fn cuped_pre_periods_are_bounded() {
        assert!(check_cuped(None).is_ok());
        assert!(check_cuped(Some(&CupedSpec {
            pre_period_days: 14
        }))
        .is_ok());
        for days in [0, 366] {
            let e = check_cuped(Some(&CupedSpec {
                pre_period_days: days,
            }))
            .unwrap_err();
            assert_eq!(e.field(), "cuped.pre_period_days");
        }
    }

    #[test]
    fn segments_are_named_distinct_and_few() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_segments(&s(&["country", "platform"])).is_ok());
        assert_eq!(
            check_segments(&s(&["country", ""])).unwrap_err().field(),
            "segments[1]"
        );
        let e = check_segments(&s(&["country", "country"])).unwrap_err();
        assert_eq!(e.field(), "segments[1]");
        assert!(e.to_string().contains("listed twice"), "{e}");
        let many: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        assert_eq!(check_segments(&many).unwrap_err().field(), "segments");
        assert!(check_segments(&["x".repeat(129)]).is_err());
    }
}
