//! Experiments: the request a client sends, its checks, and the stored record.
//!
//! A request is checked field by field here, with no other entity in view;
//! the record adds what the server manages (status, revision, salt, flag,
//! timestamps) and is what a snapshot is built from, through
//! [`ExperimentRecord::to_core`], so what is servable is strata-core's rule.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_model::{AnalysisMode, CupedSpec, MultipleTesting, SequentialMethod, SrmAction};
use utoipa::ToSchema;

use super::{check_key, check_percent, check_targeting, check_text, percent_to_permille};
use crate::error::AppError;

/// Lifecycle status of an experiment in the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Editable; not yet submitted.
    #[default]
    Draft,
    /// Submitted for approval (or ready to start when no approval is required).
    Submitted,
    /// Approved; ready to start.
    Approved,
    /// Assigning units.
    Running,
    /// Temporarily serving nothing.
    Paused,
    /// Stopped in an emergency.
    Killed,
    /// Finished, with or without a winner rolled out.
    Concluded,
    /// Out of the way; its range returns to the pool after the cool-down.
    Archived,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Status::Draft,
        Status::Submitted,
        Status::Approved,
        Status::Running,
        Status::Paused,
        Status::Killed,
        Status::Concluded,
        Status::Archived,
    ];

    /// The status as a string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Submitted => "submitted",
            Status::Approved => "approved",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Killed => "killed",
            Status::Concluded => "concluded",
            Status::Archived => "archived",
        }
    }

    /// Parses a status string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Status::Draft,
            "submitted" => Status::Submitted,
            "approved" => Status::Approved,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "killed" => Status::Killed,
            "concluded" => Status::Concluded,
            "archived" => Status::Archived,
            _ => return None,
        })
    }

    /// Whether the experiment still owns its layer range unconditionally
    /// (ended experiments own it until the cool-down has passed).
    pub fn is_live(self) -> bool {
        !matches!(self, Status::Killed | Status::Concluded | Status::Archived)
    }

    /// Whether the experiment has been started (it appears in snapshots).
    pub fn is_started(self) -> bool {
        matches!(
            self,
            Status::Running | Status::Paused | Status::Killed | Status::Concluded
        )
    }
}

/// One variant of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantDef {
    /// Key, unique within the experiment.
    pub key: String,
    /// Positive integer weight.
    pub weight: u32,
    /// Marks the control; when no variant sets it, the variant keyed `control` is the control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<bool>,
}

/// Most stages of a ramp plan.
pub const MAX_RAMP_STAGES: usize = 20;

/// The longest stage of a ramp plan, in hours (a year).
pub const MAX_RAMP_HOURS: f64 = 8760.0;

/// One stage of a ramp plan: the share of the experiment's range assigned,
/// and how long at least before the guardrail monitor may ramp further.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RampStage {
    /// `ramp_percent` of the stage, in (0, 100], steps of 0.1.
    pub percent: f64,
    /// Hours at this stage before the next; required except on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_hours: Option<f64>,
}

/// Checks a ramp plan: stages strictly increasing in (0, 100], every stage
/// but the last with `min_hours` in [0, [`MAX_RAMP_HOURS`]].
pub fn check_ramp_plan(plan: &[RampStage]) -> Result<(), AppError> {
    if plan.len() > MAX_RAMP_STAGES {
        return Err(AppError::validation(
            "ramp_plan",
            format!("a ramp plan has at most {MAX_RAMP_STAGES} stages"),
        ));
    }
    let mut last = 0.0;
    for (i, stage) in plan.iter().enumerate() {
        let f = format!("ramp_plan[{i}].percent");
        check_percent(&f, stage.percent)?;
        if stage.percent <= 0.0 {
            return Err(AppError::validation(
                f,
                "a ramp stage must assign more than 0 %",
            ));
        }
        if stage.percent <= last {
            return Err(AppError::validation(
                f,
                format!(
                    "ramp stages must increase: {} does not exceed {last}",
                    stage.percent
                ),
            ));
        }
        last = stage.percent;
        let f = format!("ramp_plan[{i}].min_hours");
        match stage.min_hours {
            Some(h) if !(h.is_finite() && (0.0..=MAX_RAMP_HOURS).contains(&h)) => {
                return Err(AppError::validation(
                    f,
                    format!("min_hours must be between 0 and {MAX_RAMP_HOURS}, got {h}"),
                ))
            }
            None if i + 1 < plan.len() => {
                return Err(AppError::validation(
                    f,
                    "min_hours is required on every stage but the last",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The body of `POST /api/v1/experiments` and `PUT /api/v1/experiments/{key}`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRequest {
    /// Unique key (`[A-Za-z0-9_.-]`, at most 128 bytes).
    pub key: String,
    /// Display name.
    pub name: String,
    /// Pre-registered hypothesis.
    #[serde(default)]
    pub hypothesis: String,
    /// Owning team.
    pub owner_team: String,
    /// Context attribute identifying the unit (default `user_id`).
    #[serde(default = "default_unit")]
    pub unit: String,
    /// Context attribute identifying the unit when `unit` has no value
    /// (e.g. `device_id` before sign-in; assignment spec, section 2).
    #[serde(default)]
    pub fallback_unit: Option<String>,
    /// Whether an assignment, once made, is kept across targeting, ramp and
    /// weight changes and sign-in (assignment spec, section 9).
    #[serde(default)]
    pub sticky: bool,
    /// Whether known bots (by `user_agent`) are assigned; by default a bot
    /// gets the default and logs no exposure (assignment spec, section 10).
    #[serde(default)]
    pub include_bots: bool,
    /// Layer key; absent means the default layer when a range or size is given.
    #[serde(default)]
    pub layer: Option<String>,
    /// Half-open range `[start, end)` of the layer's 1000 buckets.
    #[serde(default)]
    pub range: Option<[i64; 2]>,
    /// Instead of `range`: let the server allocate a free range of this size.
    #[serde(default)]
    pub size: Option<i64>,
    /// Surfaces; empty means everywhere.
    #[serde(default)]
    pub surfaces: Vec<String>,
    /// Targeting rule tree (`docs/assignment-spec.md` section 4).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub targeting: Option<Value>,
    /// Variants; exactly one control.
    pub variants: Vec<VariantDef>,
    /// Primary metric key (must be in the registry).
    pub primary_metric: String,
    /// Secondary metric keys (must be in the registry).
    #[serde(default)]
    pub secondary_metrics: Vec<String>,
    /// Guardrail definition keys or metric keys.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// Minimum detectable effect (relative, > 0).
    pub mde: f64,
    /// Planned units.
    pub planned_units: u64,
    /// Significance level, in (0, 0.5].
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Sequential method.
    #[serde(default)]
    #[schema(value_type = crate::schema::Sequential)]
    pub sequential: SequentialMethod,
    /// Intent-to-treat (default) or per-protocol analysis.
    #[serde(default)]
    #[schema(value_type = crate::schema::AnalysisMode)]
    pub analysis: AnalysisMode,
    /// Correction over the non-primary metrics (default Benjamini–Hochberg).
    #[serde(default)]
    #[schema(value_type = crate::schema::MultipleTesting)]
    pub multiple_testing: MultipleTesting,
    /// CUPED variance reduction; absent for off.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::Cuped>)]
    pub cuped: Option<CupedSpec>,
    /// Exposure attributes results are broken down by.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Days it must run before a look may decide `ship`, 1 to 365 (default 7).
    #[serde(default = "strata_model::plan::default_min_duration_days")]
    pub min_duration_days: u32,
    /// Whether results carry the Bayesian summary (default false).
    #[serde(default)]
    pub bayesian: bool,
    /// What a failing sample ratio mismatch check does: `alert` (default) or `pause`.
    #[serde(default)]
    #[schema(value_type = crate::schema::SrmAction)]
    pub srm_action: SrmAction,
    /// Whether `approve` (by someone other than the author) is required before `start`.
    #[serde(default)]
    pub requires_approval: bool,
    /// Whether units in the global holdout are excluded (default true).
    #[serde(default = "default_true")]
    pub respect_holdout: bool,
    /// The graduated ramp the guardrail monitor follows (empty: ramped by
    /// hand).
    #[serde(default)]
    pub ramp_plan: Vec<RampStage>,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// The variant-bucket salt, set at creation and never changed (default:
    /// random): giving one reproduces an assignment exactly — an
    /// experiment carried over from another system, or a simulation that
    /// must see the same split every time. 1 to 64 bytes of
    /// `[A-Za-z0-9_.-]`.
    #[serde(default)]
    pub salt: Option<String>,
    /// On update: the revision the client last read (optimistic concurrency).
    #[serde(default)]
    pub revision: Option<i64>,
}

fn default_unit() -> String {
    "user_id".to_owned()
}
fn default_alpha() -> f64 {
    0.05
}
fn default_true() -> bool {
    true
}

/// A stored experiment: the definition plus the server-managed fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExperimentRecord {
    /// Unique key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Pre-registered hypothesis.
    pub hypothesis: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Owning team.
    pub owner_team: String,
    /// Context attribute identifying the unit.
    pub unit: String,
    /// Context attribute identifying the unit when `unit` has no value.
    #[serde(default)]
    pub fallback_unit: Option<String>,
    /// Whether assignments are kept (assignment spec, section 9).
    #[serde(default)]
    pub sticky: bool,
    /// Whether known bots are assigned.
    #[serde(default)]
    pub include_bots: bool,
    /// Layer key, or null for an experiment without mutual exclusion.
    pub layer: Option<String>,
    /// Range in the layer.
    pub range: Option<[u16; 2]>,
    /// Surfaces; empty means everywhere.
    pub surfaces: Vec<String>,
    /// Targeting rule tree.
    #[schema(value_type = Option<Object>)]
    pub targeting: Option<Value>,
    /// Variants, the control first.
    pub variants: Vec<VariantDef>,
    /// Primary metric key.
    pub primary_metric: String,
    /// Secondary metric keys.
    pub secondary_metrics: Vec<String>,
    /// Guardrails.
    pub guardrails: Vec<String>,
    /// Minimum detectable effect.
    pub mde: f64,
    /// Planned units.
    pub planned_units: u64,
    /// Significance level.
    pub alpha: f64,
    /// Sequential method.
    #[schema(value_type = crate::schema::Sequential)]
    pub sequential: SequentialMethod,
    /// Intent-to-treat or per-protocol analysis.
    #[serde(default)]
    #[schema(value_type = crate::schema::AnalysisMode)]
    pub analysis: AnalysisMode,
    /// Correction over the non-primary metrics.
    #[serde(default)]
    #[schema(value_type = crate::schema::MultipleTesting)]
    pub multiple_testing: MultipleTesting,
    /// CUPED variance reduction, or null.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::Cuped>)]
    pub cuped: Option<CupedSpec>,
    /// Exposure attributes results are broken down by.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Days it must run before a look may decide `ship`.
    #[serde(default = "strata_model::plan::default_min_duration_days")]
    pub min_duration_days: u32,
    /// Whether results carry the Bayesian summary.
    #[serde(default)]
    pub bayesian: bool,
    /// What a failing sample ratio mismatch check does.
    #[serde(default)]
    #[schema(value_type = crate::schema::SrmAction)]
    pub srm_action: SrmAction,
    /// Whether approval is required before start.
    pub requires_approval: bool,
    /// Whether the global holdout applies.
    pub respect_holdout: bool,
    /// The graduated ramp the guardrail monitor follows.
    #[serde(default)]
    pub ramp_plan: Vec<RampStage>,
    /// Lifecycle status.
    pub status: Status,
    /// Optimistic-concurrency revision, +1 on every change.
    pub revision: i64,
    /// Share of eligible units admitted, percent (multiples of 0.1).
    pub ramp_percent: f64,
    /// Opaque client-facing key.
    pub flag: String,
    /// Variant-bucket salt; never changes.
    pub salt: String,
    /// On a concluded experiment: the variant rolled out, or null.
    pub winner: Option<String>,
    /// Why it was killed.
    pub kill_reason: Option<String>,
    /// Who created it (token name).
    pub created_by: String,
    /// Key id of the creating token.
    pub created_by_key: String,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, first start.
    pub started_at: Option<String>,
    /// RFC 3339, when killed, concluded or archived.
    pub ended_at: Option<String>,
    /// Config version that published the last change.
    pub version: u64,
}

impl ExperimentRecord {
    /// The platform's view of this experiment: what it pre-registered, as
    /// an analysis runs it (strata-model's `ExperimentDefinition`, the type
    /// in-process jobs and `strata analyze --server` read). A test holds it
    /// equal to the served JSON read as that type.
    pub fn definition(&self) -> strata_model::ExperimentDefinition {
        strata_model::ExperimentDefinition {
            key: self.key.clone(),
            owner_team: self.owner_team.clone(),
            status: self.status.as_str().to_owned(),
            variants: self
                .variants
                .iter()
                .map(|v| strata_model::VariantDefinition {
                    key: v.key.clone(),
                    weight: v.weight,
                    control: v.control,
                })
                .collect(),
            primary_metric: self.primary_metric.clone(),
            secondary_metrics: self.secondary_metrics.clone(),
            guardrails: self.guardrails.clone(),
            mde: self.mde,
            planned_units: self.planned_units,
            alpha: self.alpha,
            sequential: self.sequential,
            analysis: self.analysis,
            multiple_testing: self.multiple_testing,
            cuped: self.cuped,
            segments: self.segments.clone(),
            min_duration_days: self.min_duration_days,
            bayesian: self.bayesian,
            srm_action: self.srm_action,
            started_at: self.started_at.clone(),
            ended_at: self.ended_at.clone(),
        }
    }

    /// The index of the control variant.
    pub fn control_index(&self) -> usize {
        self.variants
            .iter()
            .position(|v| v.control == Some(true))
            .or_else(|| self.variants.iter().position(|v| v.key == "control"))
            .unwrap_or(0)
    }

    /// The experiment as strata-core sees it in a snapshot, the control first.
    pub fn to_core(&self) -> strata_core::Experiment {
        let ci = self.control_index();
        let mut variants = Vec::with_capacity(self.variants.len());
        if let Some(c) = self.variants.get(ci) {
            variants.push(strata_core::Variant {
                key: c.key.clone(),
                weight: c.weight,
            });
        }
        for (i, v) in self.variants.iter().enumerate() {
            if i != ci {
                variants.push(strata_core::Variant {
                    key: v.key.clone(),
                    weight: v.weight,
                });
            }
        }
        let status = match self.status {
            Status::Running => strata_core::Status::Running,
            Status::Paused => strata_core::Status::Paused,
            Status::Concluded => strata_core::Status::Concluded,
            _ => strata_core::Status::Killed,
        };
        strata_core::Experiment {
            key: self.key.clone(),
            flag: self.flag.clone(),
            salt: self.salt.clone(),
            status,
            unit: self.unit.clone(),
            fallback_unit: self.fallback_unit.clone(),
            sticky: self.sticky,
            include_bots: self.include_bots,
            layer: self.layer.clone(),
            range: self.range,
            ramp_permille: percent_to_permille(self.ramp_percent).unwrap_or(0),
            surfaces: self.surfaces.clone(),
            targeting: self.targeting.clone(),
            variants,
            respect_holdout: self.respect_holdout,
            winner: if self.status == Status::Concluded {
                self.winner.clone()
            } else {
                None
            },
        }
    }
}

impl ExperimentRequest {
    /// Field checks that need no other entity. Returns the variants reordered
    /// with the control first.
    pub fn validate(&self) -> Result<Vec<VariantDef>, AppError> {
        check_key("key", &self.key)?;
        if let Some(salt) = &self.salt {
            let ok = (1..=64).contains(&salt.len())
                && salt
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(AppError::validation(
                    "salt",
                    "salt must be 1 to 64 characters of letters, digits, `_`, `.` and `-`",
                ));
            }
        }
        check_ramp_plan(&self.ramp_plan)?;
        if self.name.trim().is_empty() {
            return Err(AppError::validation("name", "name must not be empty"));
        }
        check_text("name", &self.name, 256)?;
        check_text("hypothesis", &self.hypothesis, 10_000)?;
        check_text("description", &self.description, 10_000)?;
        check_key("owner_team", &self.owner_team)?;
        if self.unit.is_empty() {
            return Err(AppError::validation("unit", "unit must not be empty"));
        }
        check_text("unit", &self.unit, 128)?;
        if let Some(fallback) = &self.fallback_unit {
            if fallback.is_empty() {
                return Err(AppError::validation(
                    "fallback_unit",
                    "fallback_unit must not be empty",
                ));
            }
            check_text("fallback_unit", fallback, 128)?;
            if *fallback == self.unit {
                return Err(AppError::validation(
                    "fallback_unit",
                    "fallback_unit must differ from unit",
                ));
            }
        }
        if let Some(layer) = &self.layer {
            check_key("layer", layer)?;
        }
        for (i, s) in self.surfaces.iter().enumerate() {
            check_text(&format!("surfaces[{i}]"), s, 128)?;
        }
        if self.surfaces.len() > 100 {
            return Err(AppError::validation("surfaces", "at most 100 surfaces"));
        }
        // Variants.
        if self.variants.len() < 2 {
            return Err(AppError::validation(
                "variants",
                "an experiment needs at least two variants",
            ));
        }
        if self.variants.len() > 100 {
            return Err(AppError::validation("variants", "at most 100 variants"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut total: u64 = 0;
        for (i, v) in self.variants.iter().enumerate() {
            let f = format!("variants[{i}].key");
            if v.key.is_empty() {
                return Err(AppError::validation(f, "variant key must not be empty"));
            }
            check_text(&f, &v.key, 128)?;
            if !seen.insert(v.key.as_str()) {
                return Err(AppError::validation(
                    f,
                    format!("duplicate variant key {:?}", v.key),
                ));
            }
            if v.weight == 0 {
                return Err(AppError::validation(
                    format!("variants[{i}].weight"),
                    "variant weight must be positive",
                ));
            }
            total += u64::from(v.weight);
        }
        if total > 1_000_000 {
            return Err(AppError::validation(
                "variants",
                "the variant weights must sum to at most 1000000",
            ));
        }
        let explicit: Vec<usize> = self
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.control == Some(true))
            .map(|(i, _)| i)
            .collect();
        let control = if self.variants.iter().any(|v| v.control.is_some()) {
            if explicit.len() != 1 {
                return Err(AppError::validation(
                    "variants",
                    format!(
                        "exactly one variant must have control: true, found {}",
                        explicit.len()
                    ),
                ));
            }
            explicit[0]
        } else {
            self.variants
                .iter()
                .position(|v| v.key == "control")
                .ok_or_else(|| {
                    AppError::validation(
                        "variants",
                        "exactly one control is required: name a variant \"control\" or mark one with control: true",
                    )
                })?
        };
        let mut ordered = Vec::with_capacity(self.variants.len());
        ordered.push(VariantDef {
            control: Some(true),
            ..self.variants[control].clone()
        });
        for (i, v) in self.variants.iter().enumerate() {
            if i != control {
                ordered.push(VariantDef {
                    control: None,
                    ..v.clone()
                });
            }
        }
        // Targeting: validated by strata-core.
        if let Some(t) = &self.targeting {
            if !t.is_null() {
                check_targeting(t)?;
            }
        }
        // Pre-registration.
        check_key("primary_metric", &self.primary_metric)?;
        if !(self.mde.is_finite() && self.mde > 0.0 && self.mde < 1e6) {
            return Err(AppError::validation(
                "mde",
                format!("mde must be a positive number, got {}", self.mde),
            ));
        }
        if self.planned_units == 0 || self.planned_units > 1_000_000_000_000 {
            return Err(AppError::validation(
                "planned_units",
                "planned_units must be between 1 and 10^12",
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha <= 0.5) {
            return Err(AppError::validation(
                "alpha",
                format!("alpha must be in (0, 0.5], got {}", self.alpha),
            ));
        }
        strata_model::plan::check_cuped(self.cuped.as_ref())
            .and_then(|()| strata_model::plan::check_segments(&self.segments))
            .and_then(|()| strata_model::plan::check_min_duration(self.min_duration_days))
            .map_err(|e| AppError::validation(e.field(), e.to_string()))?;
        if let Some([s, e]) = self.range {
            if !(0..i64::from(strata_core::hash::BUCKETS)).contains(&s)
                || !(1..=i64::from(strata_core::hash::BUCKETS)).contains(&e)
                || s >= e
            {
                return Err(AppError::validation(
                    "range",
                    format!("range must satisfy 0 <= start < end <= 1000, got [{s}, {e}]"),
                ));
            }
            if self.size.is_some() {
                return Err(AppError::validation("size", "give range or size, not both"));
            }
        }
        if let Some(size) = self.size {
            if !(1..=i64::from(strata_core::hash::BUCKETS)).contains(&size) {
                return Err(AppError::validation(
                    "size",
                    format!("size must be between 1 and 1000, got {size}"),
                ));
            }
        }
        Ok(ordered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(v: serde_json::Value) -> Vec<RampStage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ramp_plans_increase_and_name_their_hours() {
        let ok = stages(serde_json::json!([
            {"percent": 1, "min_hours": 24}, {"percent": 5, "min_hours": 24},
            {"percent": 25, "min_hours": 48}, {"percent": 50}
        ]));
        assert!(check_ramp_plan(&ok).is_ok());
        assert!(check_ramp_plan(&[]).is_ok());
        let refused = |v: serde_json::Value| {
            let e = check_ramp_plan(&stages(v)).unwrap_err();
            (e.field.unwrap_or_default(), e.message)
        };
        let (f, m) = refused(serde_json::json!([{"percent": 5, "min_hours": 1}, {"percent": 5}]));
        assert_eq!(f, "ramp_plan[1].percent");
        assert!(m.contains("must increase"), "{m}");
        let (f, _) = refused(serde_json::json!([{"percent": 0, "min_hours": 1}, {"percent": 5}]));
        assert_eq!(f, "ramp_plan[0].percent");
        let (f, _) = refused(serde_json::json!([{"percent": 100.05}]));
        assert_eq!(f, "ramp_plan[0].percent");
        let (f, m) = refused(serde_json::json!([{"percent": 5}, {"percent": 50}]));
        assert_eq!(f, "ramp_plan[0].min_hours");
        assert!(m.contains("required"), "{m}");
        let (f, _) = refused(serde_json::json!([{"percent": 5, "min_hours": -1}, {"percent": 50}]));
        assert_eq!(f, "ramp_plan[0].min_hours");
        let many: Vec<serde_json::Value> = (1..=21)
            .map(|i| serde_json::json!({"percent": i, "min_hours": 1}))
            .collect();
        assert_eq!(refused(serde_json::Value::from(many)).0, "ramp_plan");
        assert!(
            serde_json::from_value::<RampStage>(serde_json::json!({"percent": 1, "hours": 2}))
                .is_err()
        );
    }

    #[test]
    fn the_definition_is_the_served_record_read_as_the_platforms_type() {
        let record = ExperimentRecord {
            key: "exp_checkout".into(),
            owner_team: "checkout".into(),
            status: Status::Running,
            variants: vec![
                VariantDef {
                    key: "control".into(),
                    weight: 1,
                    control: Some(true),
                },
                VariantDef {
                    key: "treatment".into(),
                    weight: 3,
                    control: None,
                },
            ],
            primary_metric: "conversion".into(),
            secondary_metrics: vec!["revenue".into()],
            guardrails: vec!["latency_guard".into()],
            mde: 0.02,
            planned_units: 5000,
            alpha: 0.01,
            sequential: SequentialMethod::AlwaysValid,
            analysis: AnalysisMode::PerProtocol,
            multiple_testing: MultipleTesting::Holm,
            cuped: Some(CupedSpec {
                pre_period_days: 14,
            }),
            segments: vec!["country".into()],
            min_duration_days: 14,
            bayesian: true,
            srm_action: SrmAction::Pause,
            started_at: Some("2026-01-01T00:00:00.000Z".into()),
            ended_at: None,
            ..ExperimentRecord::default()
        };
        let served: strata_model::ExperimentDefinition =
            serde_json::from_value(serde_json::to_value(&record).unwrap()).unwrap();
        assert_eq!(record.definition(), served);
        assert_eq!(served.control().unwrap().key, "control");
    }
}
