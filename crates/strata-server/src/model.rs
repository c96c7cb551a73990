//! The definitions the control plane owns, as stored and as served by the API.
//!
//! Requests are parsed into `*Request` types (unknown fields rejected);
//! stored records carry the server-managed fields (status, revision, salt,
//! flag, timestamps). Field-level validation that needs no other entity lives
//! here; checks against the registry and the layer live in the handlers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::AppError;

/// The layer experiments without an explicit `layer` go to.
pub const DEFAULT_LAYER: &str = "default";

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

/// Sequential testing method pre-registered for the analysis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sequential {
    /// Fixed horizon: one look at the planned sample size.
    #[default]
    None,
    /// Group-sequential (alpha spending) looks.
    GroupSequential,
    /// Always-valid (mSPRT) inference.
    AlwaysValid,
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
    #[serde(default = "default_sequential")]
    pub sequential: Sequential,
    /// Whether `approve` (by someone other than the author) is required before `start`.
    #[serde(default)]
    pub requires_approval: bool,
    /// Whether units in the global holdout are excluded (default true).
    #[serde(default = "default_true")]
    pub respect_holdout: bool,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
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
fn default_sequential() -> Sequential {
    Sequential::None
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
    pub sequential: Sequential,
    /// Whether approval is required before start.
    pub requires_approval: bool,
    /// Whether the global holdout applies.
    pub respect_holdout: bool,
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

/// Converts a percentage (0–100, multiples of 0.1) to permille.
pub fn percent_to_permille(p: f64) -> Option<u16> {
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let scaled = p * 10.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    u16::try_from(rounded as i64).ok()
}

/// Validates a percentage field.
pub fn check_percent(field: &str, p: f64) -> Result<u16, AppError> {
    percent_to_permille(p).ok_or_else(|| {
        AppError::validation(
            field,
            format!("{field} must be between 0 and 100 in steps of 0.1, got {p}"),
        )
    })
}

/// Checks a key: non-empty, at most 128 bytes of `[A-Za-z0-9_.-]`.
pub fn check_key(field: &str, key: &str) -> Result<(), AppError> {
    if key.is_empty() {
        return Err(AppError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if key.len() > 128 {
        return Err(AppError::validation(
            field,
            format!("{field} must be at most 128 bytes"),
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(AppError::validation(
            field,
            format!("{field} {key:?} may contain only letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(())
}

/// Checks a free-text field's length.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    if value.len() > max {
        return Err(AppError::validation(
            field,
            format!("{field} must be at most {max} bytes"),
        ));
    }
    Ok(())
}

impl ExperimentRequest {
    /// Field checks that need no other entity. Returns the variants reordered
    /// with the control first.
    pub fn validate(&self) -> Result<Vec<VariantDef>, AppError> {
        check_key("key", &self.key)?;
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

/// Validates a targeting rule with strata-core's own compiler.
pub fn check_targeting(rule: &Value) -> Result<(), AppError> {
    strata_core::targeting::validate(rule).map_err(|e| {
        // The error's text is `targeting{path}: {reason}`, the message
        // clients have always received.
        AppError::validation(format!("targeting{}", e.path()), e.to_string())
    })
}

/// A layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LayerRecord {
    /// Unique key.
    pub key: String,
    /// Layer-bucket salt, generated by the server.
    pub salt: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Optimistic-concurrency revision.
    pub revision: i64,
    /// RFC 3339.
    pub created_at: String,
}

/// The body of `POST /api/v1/layers`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerRequest {
    /// Unique key.
    pub key: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

/// Metric types of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    /// Share of units with at least one matching event.
    Binomial,
    /// Matching events per unit.
    Count,
    /// Sum of a value per unit.
    Sum,
    /// Mean of a value per unit.
    Mean,
    /// Ratio of two per-unit aggregates (delta method).
    Ratio,
    /// A quantile of a value.
    Quantile,
}

/// Which events a metric counts (the filter format of `docs/data-model.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// An event type or a list of types; absent means every type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event_type: Option<Value>,
    /// A predicate on the event's numeric value: a number (equality) or an
    /// object of operators (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `not_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// Predicates on event properties, by property name: a scalar (equality)
    /// or an object of operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Map<String, Value>>,
}

/// One side of a ratio metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatioPart {
    /// `count` or `sum`.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events.
    pub filter: EventFilter,
}

/// Desired direction of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricDirection {
    /// Higher is better.
    IncreaseIsGood,
    /// Higher is worse.
    IncreaseIsBad,
}

/// A metric definition of the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// Unique key.
    pub key: String,
    /// The metric type.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events (not for `ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<EventFilter>,
    /// Winsorize per-unit values at this quantile, in (0.5, 1); not for binomial or quantile metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winsorize: Option<f64>,
    /// Desired direction (default `increase_is_good`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<MetricDirection>,
    /// Ratio numerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<RatioPart>,
    /// Ratio denominator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<RatioPart>,
    /// For `quantile`: the quantile in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

const PREDICATE_OPS: [&str; 8] = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"];

fn check_predicate(field: &str, p: &Value, numbers_only: bool) -> Result<(), AppError> {
    let scalar_ok = |v: &Value| {
        if numbers_only {
            v.as_f64().is_some_and(f64::is_finite)
        } else {
            v.is_string() || v.is_boolean() || v.as_f64().is_some_and(f64::is_finite)
        }
    };
    let what = if numbers_only {
        "a finite number"
    } else {
        "a string, number or boolean"
    };
    match p {
        Value::Object(ops) => {
            if ops.is_empty() {
                return Err(AppError::validation(
                    field,
                    format!("{field} has no operator"),
                ));
            }
            for (op, v) in ops {
                let f = format!("{field}.{op}");
                match op.as_str() {
                    "in" | "not_in" => {
                        let ok = v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(scalar_ok));
                        if !ok {
                            return Err(AppError::validation(
                                f,
                                format!("{op} needs a non-empty list, each {what}"),
                            ));
                        }
                    }
                    o if PREDICATE_OPS.contains(&o) => {
                        if !scalar_ok(v) {
                            return Err(AppError::validation(f, format!("{op} needs {what}")));
                        }
                    }
                    _ => {
                        return Err(AppError::validation(
                            f,
                            format!("unknown operator {op:?}; expected eq, ne, gt, gte, lt, lte, in or not_in"),
                        ))
                    }
                }
            }
            Ok(())
        }
        v if scalar_ok(v) => Ok(()),
        _ => Err(AppError::validation(
            field,
            format!("{field} must be {what} or an object of operators"),
        )),
    }
}

fn check_filter(field: &str, f: &EventFilter) -> Result<(), AppError> {
    let tf = format!("{field}.type");
    match &f.event_type {
        None => {}
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 128 => {}
        Some(Value::Array(ts))
            if !ts.is_empty()
                && ts
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| !t.is_empty() && t.len() <= 128)) => {}
        Some(_) => {
            return Err(AppError::validation(
                tf.clone(),
                format!("{tf} must be a non-empty event type or a non-empty list of them"),
            ))
        }
    }
    if let Some(p) = &f.value {
        check_predicate(&format!("{field}.value"), p, true)?;
    }
    if let Some(props) = &f.properties {
        for (k, p) in props {
            check_predicate(&format!("{field}.properties.{k}"), p, false)?;
        }
    }
    Ok(())
}

impl MetricDef {
    /// Checks the definition.
    pub fn validate(&self) -> Result<(), AppError> {
        check_key("key", &self.key)?;
        match self.kind {
            MetricType::Ratio => {
                let (Some(n), Some(d)) = (&self.numerator, &self.denominator) else {
                    return Err(AppError::validation(
                        if self.numerator.is_none() {
                            "numerator"
                        } else {
                            "denominator"
                        },
                        "a ratio metric needs a numerator and a denominator",
                    ));
                };
                for (name, part) in [("numerator", n), ("denominator", d)] {
                    if !matches!(part.kind, MetricType::Count | MetricType::Sum) {
                        return Err(AppError::validation(
                            format!("{name}.type"),
                            format!("{name}.type must be count or sum"),
                        ));
                    }
                    check_filter(&format!("{name}.filter"), &part.filter)?;
                }
                if self.filter.is_some() {
                    return Err(AppError::validation(
                        "filter",
                        "a ratio metric takes filters in numerator and denominator, not filter",
                    ));
                }
            }
            _ => {
                let Some(f) = &self.filter else {
                    return Err(AppError::validation(
                        "filter",
                        "filter is required for this metric type",
                    ));
                };
                check_filter("filter", f)?;
                if self.numerator.is_some() || self.denominator.is_some() {
                    return Err(AppError::validation(
                        "numerator",
                        "numerator and denominator are only for ratio metrics",
                    ));
                }
            }
        }
        match (self.kind, self.quantile) {
            (MetricType::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
            (MetricType::Quantile, _) => {
                return Err(AppError::validation(
                    "quantile",
                    "a quantile metric needs quantile in (0, 1)",
                ))
            }
            (_, Some(_)) => {
                return Err(AppError::validation(
                    "quantile",
                    "quantile is only for quantile metrics",
                ))
            }
            _ => {}
        }
        if let Some(w) = self.winsorize {
            if !(w > 0.5 && w < 1.0) {
                return Err(AppError::validation(
                    "winsorize",
                    format!("winsorize must be in (0.5, 1), got {w}"),
                ));
            }
            if matches!(self.kind, MetricType::Binomial | MetricType::Quantile) {
                return Err(AppError::validation(
                    "winsorize",
                    "winsorize does not apply to binomial and quantile metrics",
                ));
            }
        }
        if let Some(d) = &self.description {
            check_text("description", d, 10_000)?;
        }
        Ok(())
    }
}

/// Which direction of change a guardrail watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailDirection {
    /// An increase beyond the threshold is a breach.
    IncreaseIsBad,
    /// A decrease beyond the threshold is a breach.
    DecreaseIsBad,
}

/// What happens on a breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoAction {
    /// Kill the experiment.
    Kill,
    /// Alert the owners.
    Alert,
}

/// A guardrail definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailDef {
    /// Unique key.
    pub key: String,
    /// The metric watched (must be in the registry).
    pub metric: String,
    /// Breach threshold (absolute, or relative when `relative`).
    pub threshold: f64,
    /// Whether `threshold` is a relative change.
    #[serde(default)]
    pub relative: bool,
    /// Which direction is bad.
    pub direction: GuardrailDirection,
    /// Evaluation window.
    pub window_minutes: u32,
    /// Minimum samples before it can fire.
    #[serde(default)]
    pub min_samples: u64,
    /// Minimum experiment age before it can fire.
    #[serde(default)]
    pub min_age_minutes: u32,
    /// `kill` or `alert`.
    pub auto_action: AutoAction,
}

impl GuardrailDef {
    /// Field checks (the metric is checked against the registry by the handler).
    pub fn validate(&self) -> Result<(), AppError> {
        check_key("key", &self.key)?;
        check_key("metric", &self.metric)?;
        if !self.threshold.is_finite() || self.threshold.abs() > 1e15 {
            return Err(AppError::validation(
                "threshold",
                "threshold must be a finite number",
            ));
        }
        if self.window_minutes == 0 || self.window_minutes > 60 * 24 * 90 {
            return Err(AppError::validation(
                "window_minutes",
                "window_minutes must be between 1 and 129600",
            ));
        }
        Ok(())
    }
}

/// The global holdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HoldoutRecord {
    /// Salt of the holdout bucket; rotation creates a new one.
    pub salt: String,
    /// Share of units held out, percent (multiples of 0.1).
    pub percent: f64,
    /// Optimistic-concurrency revision.
    pub revision: i64,
    /// RFC 3339.
    pub updated_at: String,
}

/// The body of `PUT /api/v1/holdout`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldoutRequest {
    /// Share of units held out, percent (0–100, multiples of 0.1; 0 disables).
    pub percent: f64,
    /// Replace the salt (reshuffles who is held out).
    #[serde(default)]
    pub rotate_salt: bool,
}
