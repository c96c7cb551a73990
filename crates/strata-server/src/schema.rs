//! OpenAPI schemas of the platform's definitions (`strata-model`).
//!
//! The metric registry, guardrail definitions and the sequential method are
//! strata-model's types, which carry no OpenAPI derive (the model does not
//! depend on utoipa), and a foreign trait cannot be implemented for a foreign
//! type here. So these documentation-only types describe the same JSON under
//! the component names the API has always published; the handlers never use
//! them. A test checks that they and the model name the same fields.

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// Sequential testing method pre-registered for the analysis.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Sequential {
    /// Fixed horizon: one look at the planned sample size.
    None,
    /// Group-sequential (alpha spending) looks.
    GroupSequential,
    /// Always-valid (mSPRT) inference.
    AlwaysValid,
}

/// Which variant a unit is analysed in.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AnalysisMode {
    /// Intent-to-treat: the assigned variant; opted-out units included.
    Itt,
    /// Per-protocol: the served variant; opted-out units dropped.
    PerProtocol,
}

/// Multiple-testing correction over the non-primary metrics.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum MultipleTesting {
    /// No adjustment.
    None,
    /// Bonferroni.
    Bonferroni,
    /// Holm step-down.
    Holm,
    /// Benjamini–Hochberg (false discovery rate).
    BenjaminiHochberg,
}

/// What a failing sample ratio mismatch check does.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum SrmAction {
    /// Record and report it; the experiment keeps running.
    Alert,
    /// Also pause the experiment.
    Pause,
}

/// CUPED variance reduction.
#[derive(ToSchema)]
pub struct Cuped {
    /// Length of the pre-period before the start, 1 to 365 days.
    pub pre_period_days: u32,
}

/// Metric types of the registry.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
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
#[derive(ToSchema)]
pub struct EventFilter {
    /// An event type or a list of types (each 1 to 128 bytes); absent means every type.
    #[schema(rename = "type", value_type = Option<Object>)]
    pub event_type: Option<String>,
    /// A predicate on the event's numeric value: a number (equality) or an
    /// object of operators (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `not_in`).
    #[schema(value_type = Option<Object>)]
    pub value: Option<f64>,
    /// Predicates on event properties, by property name: a scalar (equality)
    /// or an object of operators.
    #[schema(value_type = Option<Object>)]
    pub properties: Option<BTreeMap<String, String>>,
}

/// One side of a ratio metric.
#[derive(ToSchema)]
pub struct RatioPart {
    /// `count` or `sum`.
    #[schema(rename = "type")]
    pub kind: MetricType,
    /// Which events (required by the API).
    pub filter: EventFilter,
}

/// Desired direction of a metric.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum MetricDirection {
    /// Higher is better.
    IncreaseIsGood,
    /// Higher is worse.
    IncreaseIsBad,
}

/// A metric definition of the registry.
#[derive(ToSchema)]
pub struct MetricDef {
    /// Unique key (`[A-Za-z0-9_.-]`, at most 128 bytes).
    pub key: String,
    /// The metric type.
    #[schema(rename = "type")]
    pub kind: MetricType,
    /// Which events (required by the API for every type but `ratio`, which filters in its parts).
    pub filter: Option<EventFilter>,
    /// Winsorize per-unit values at this quantile, in (0.5, 1); not for binomial or quantile metrics.
    pub winsorize: Option<f64>,
    /// Desired direction (default `increase_is_good`).
    pub direction: Option<MetricDirection>,
    /// Ratio numerator.
    pub numerator: Option<RatioPart>,
    /// Ratio denominator.
    pub denominator: Option<RatioPart>,
    /// For `quantile`: the quantile in (0, 1).
    pub quantile: Option<f64>,
    /// Free-form description, at most 10000 bytes.
    pub description: Option<String>,
}

/// Which direction of change a guardrail watches.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum GuardrailDirection {
    /// An increase beyond the threshold is a breach.
    IncreaseIsBad,
    /// A decrease beyond the threshold is a breach.
    DecreaseIsBad,
}

/// What happens on a breach.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AutoAction {
    /// Kill the experiment.
    Kill,
    /// Pause the experiment.
    Pause,
    /// Alert the owners.
    Alert,
}

/// Which experiments a guardrail definition watches.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AppliesTo {
    /// Those that list it in their `guardrails`.
    Listed,
    /// Every running experiment.
    All,
}

/// A guardrail definition.
#[derive(ToSchema)]
pub struct GuardrailDef {
    /// Unique key.
    pub key: String,
    /// The metric watched (must be in the registry).
    pub metric: String,
    /// The harm tolerated (≥ 0; absolute, or relative when `relative`, below
    /// 1 for a relative decrease).
    pub threshold: f64,
    /// Whether `threshold` is a relative change.
    #[schema(default = false)]
    pub relative: Option<bool>,
    /// Which direction is bad.
    pub direction: GuardrailDirection,
    /// Evaluation window, 1 to 129600 minutes.
    pub window_minutes: u32,
    /// Minimum samples before it can fire.
    #[schema(default = 0)]
    pub min_samples: Option<u64>,
    /// Minimum time since activation before it can fire.
    #[schema(default = 120)]
    pub min_age_minutes: Option<u32>,
    /// `kill`, `pause` or `alert`.
    pub auto_action: AutoAction,
    /// Which experiments it watches.
    #[schema(default = "listed")]
    pub applies_to: Option<AppliesTo>,
    /// Whether a kill or pause acts on an experiment requiring approval.
    #[schema(default = false)]
    pub force: Option<bool>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let v = serde_json::to_value(T::schema()).unwrap();
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn fields(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    /// A model value with every optional field set serialises to exactly the
    /// properties the schema documents.
    #[test]
    fn schemas_document_the_models_fields() {
        let metric: strata_model::Metric = serde_json::from_value(json!({"key": "k",
            "type": "count", "filter": {"type": "a", "value": 1, "properties": {"p": "x"}},
            "direction": "increase_is_good", "winsorize": 0.9, "quantile": 0.5,
            "numerator": {"type": "count", "filter": {"type": "a"}},
            "denominator": {"type": "count", "filter": {"type": "a"}}, "description": "d"}))
        .unwrap();
        let m = serde_json::to_value(&metric).unwrap();
        assert_eq!(fields(&m), properties::<super::MetricDef>());
        assert_eq!(fields(&m["filter"]), properties::<super::EventFilter>());
        assert_eq!(fields(&m["numerator"]), properties::<super::RatioPart>());
        let guardrail: strata_model::GuardrailDef = serde_json::from_value(json!({"key": "g",
            "metric": "m", "threshold": 1, "direction": "increase_is_bad",
            "window_minutes": 5, "auto_action": "kill"}))
        .unwrap();
        let g = serde_json::to_value(&guardrail).unwrap();
        assert_eq!(fields(&g), properties::<super::GuardrailDef>());
    }

    /// The documented enum values are the model's.
    #[test]
    fn schemas_document_the_models_values() {
        fn values<T: PartialSchema>() -> Value {
            serde_json::to_value(T::schema()).unwrap()["enum"].clone()
        }
        let names = |v: Vec<Value>| Value::Array(v);
        use strata_model::{
            AppliesTo, AutoAction, Direction, GuardrailDirection, MetricType, SequentialMethod,
        };
        assert_eq!(
            values::<super::Sequential>(),
            names(
                [
                    SequentialMethod::None,
                    SequentialMethod::GroupSequential,
                    SequentialMethod::AlwaysValid
                ]
                .iter()
                .map(|m| serde_json::to_value(m).unwrap())
                .collect()
            )
        );
        assert_eq!(
            values::<super::MetricType>(),
            names(
                [
                    MetricType::Binomial,
                    MetricType::Count,
                    MetricType::Sum,
                    MetricType::Mean,
                    MetricType::Ratio,
                    MetricType::Quantile
                ]
                .iter()
                .map(|m| serde_json::to_value(m).unwrap())
                .collect()
            )
        );
        assert_eq!(
            values::<super::MetricDirection>(),
            names(
                [Direction::IncreaseIsGood, Direction::IncreaseIsBad]
                    .iter()
                    .map(|m| serde_json::to_value(m).unwrap())
                    .collect()
            )
        );
        assert_eq!(
            values::<super::GuardrailDirection>(),
            names(
                [
                    GuardrailDirection::IncreaseIsBad,
                    GuardrailDirection::DecreaseIsBad
                ]
                .iter()
                .map(|m| serde_json::to_value(m).unwrap())
                .collect()
            )
        );
        assert_eq!(
            values::<super::AutoAction>(),
            names(
                [AutoAction::Kill, AutoAction::Pause, AutoAction::Alert]
                    .iter()
                    .map(|m| serde_json::to_value(m).unwrap())
                    .collect()
            )
        );
        assert_eq!(
            values::<super::AppliesTo>(),
            names(
                [AppliesTo::Listed, AppliesTo::All]
                    .iter()
                    .map(|m| serde_json::to_value(m).unwrap())
                    .collect()
            )
        );
    }
}
