//! An experiment's pre-registered definition, as the control plane stores
//! and serves it, and the parts of it an analysis needs.
//!
//! What was pre-registered — variants and weights, the control, the primary,
//! secondary and guardrail metrics, alpha, the minimum detectable effect,
//! the planned units, the sequential method, and the analysis settings of
//! [`crate::plan`] (intent-to-treat or per-protocol, the multiple-testing
//! correction, CUPED, segments, the minimum duration, the Bayesian summary,
//! the action on a sample ratio mismatch) — is what an analysis of the
//! experiment runs with; nobody restates it in a separate spec file.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::plan::{default_min_duration_days, AnalysisMode, CupedSpec, MultipleTesting, SrmAction};
use crate::sequential::SequentialMethod;

/// One variant of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantDefinition {
    /// Key, unique within the experiment.
    pub key: String,
    /// Positive integer weight.
    pub weight: u32,
    /// Marks the control; when no variant sets it, the variant keyed
    /// `control` is the control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<bool>,
}

/// An experiment's definition as the control plane serves it
/// (`GET /api/v1/experiments/{key}`); fields this type does not name (the
/// layer, targeting, revision, …) are ignored when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentDefinition {
    /// Unique key, as logged in exposures.
    pub key: String,
    /// Owning team.
    #[serde(default)]
    pub owner_team: String,
    /// Lifecycle status (`draft`, `running`, `killed`, …).
    #[serde(default)]
    pub status: String,
    /// Variants.
    pub variants: Vec<VariantDefinition>,
    /// Primary metric key.
    pub primary_metric: String,
    /// Secondary metric keys.
    #[serde(default)]
    pub secondary_metrics: Vec<String>,
    /// Guardrails: guardrail definition keys or metric keys.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// Minimum detectable effect (relative).
    pub mde: f64,
    /// Planned units.
    pub planned_units: u64,
    /// Significance level.
    pub alpha: f64,
    /// Sequential method.
    #[serde(default)]
    pub sequential: SequentialMethod,
    /// Intent-to-treat or per-protocol.
    #[serde(default)]
    pub analysis: AnalysisMode,
    /// Correction over the non-primary metrics.
    #[serde(default)]
    pub multiple_testing: MultipleTesting,
    /// CUPED; none for off.
    #[serde(default)]
    pub cuped: Option<CupedSpec>,
    /// Exposure attributes results are broken down by.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Days it must run before a look may decide `ship`.
    #[serde(default = "default_min_duration_days")]
    pub min_duration_days: u32,
    /// Whether results carry the Bayesian summary.
    #[serde(default)]
    pub bayesian: bool,
    /// What a failing sample ratio mismatch check does.
    #[serde(default)]
    pub srm_action: SrmAction,
    /// When it started (RFC 3339); none if it never did.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it ended (killed, concluded); none while it runs.
    #[serde(default)]
    pub ended_at: Option<String>,
}

impl ExperimentDefinition {
    /// The control variant: the one marked `control: true`, else the one
    /// keyed `control`.
    pub fn control(&self) -> Result<&VariantDefinition, ModelError> {
        let marked: Vec<&VariantDefinition> = self
            .variants
            .iter()
            .filter(|v| v.control == Some(true))
            .collect();
        match marked.as_slice() {
            [one] => Ok(one),
            [] => self
                .variants
                .iter()
                .find(|v| v.key == "control")
                .ok_or_else(|| {
                    invalid(
                        "variants",
                        "have no control: name a variant \"control\" or mark one with control: true",
                    )
                }),
            _ => Err(invalid("variants", "mark more than one variant as the control")),
        }
    }

    /// When the experiment started, or an error saying it never did (there
    /// is nothing to analyse before the start).
    pub fn start(&self) -> Result<&str, ModelError> {
        self.started_at.as_deref().ok_or_else(|| {
            invalid(
                "started_at",
                format!(
                    "is unset: experiment {:?} has not started (status {}), there is nothing to analyse",
                    self.key,
                    if self.status.is_empty() { "unknown" } else { &self.status }
                ),
            )
        })
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> ExperimentDefinition {
        // The shape `GET /api/v1/experiments/{key}` answers, extra fields included.
        serde_json::from_str(
            r#"{"key": "exp_checkout", "name": "n", "owner_team": "checkout", "status": "running",
                "layer": "default", "range": [0, 1000], "targeting": null,
                "variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 3, "control": true}],
                "primary_metric": "conversion", "secondary_metrics": ["revenue"],
                "guardrails": ["latency_guard"], "mde": 0.02, "planned_units": 1000,
                "alpha": 0.05, "sequential": "always_valid", "revision": 4,
                "analysis": "per_protocol", "multiple_testing": "holm",
                "cuped": {"pre_period_days": 14}, "segments": ["country"],
                "min_duration_days": 14, "srm_action": "pause",
                "started_at": "2026-01-01T00:00:00Z", "ended_at": null}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_served_definition_reads_with_its_extra_fields_ignored() {
        let d = served();
        assert_eq!(d.key, "exp_checkout");
        assert_eq!(d.sequential, SequentialMethod::AlwaysValid);
        assert_eq!(d.variants[1].weight, 3);
        assert_eq!(d.start().unwrap(), "2026-01-01T00:00:00Z");
        assert_eq!(d.analysis, AnalysisMode::PerProtocol);
        assert_eq!(d.multiple_testing, MultipleTesting::Holm);
        assert_eq!(
            d.cuped,
            Some(CupedSpec {
                pre_period_days: 14
            })
        );
        assert_eq!(d.segments, ["country"]);
        assert_eq!((d.min_duration_days, d.srm_action), (14, SrmAction::Pause));
        assert!(!d.bayesian);
    }

    #[test]
    fn the_control_is_the_marked_variant_else_the_one_keyed_control() {
        let mut d = served();
        assert_eq!(d.control().unwrap().key, "b");
        d.variants[1].control = None;
        let e = d.control().unwrap_err();
        assert_eq!(e.field(), "variants");
        d.variants[0].key = "control".into();
        assert_eq!(d.control().unwrap().key, "control");
        d.variants[0].control = Some(true);
        d.variants[1].control = Some(true);
        assert_eq!(
            d.control().unwrap_err().to_string(),
            "variants mark more than one variant as the control"
        );
    }

    #[test]
    fn a_definition_that_never_started_has_no_start() {
        let mut d = served();
        d.started_at = None;
        d.status = "draft".into();
        let e = d.start().unwrap_err();
        assert_eq!(e.field(), "started_at");
        assert!(
            e.to_string().contains("has not started (status draft)"),
            "{e}"
        );
    }
}
