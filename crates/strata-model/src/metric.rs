//! The metric registry: which events a metric counts and how a unit's events
//! become its value (`docs/data-model.md`, "Metric registry").
//!
//! A registry document is `{"metrics": [METRIC, ...]}`. The same JSON is what
//! the control plane stores and serves for one metric and what the analysis
//! reads from a registry file, so the types here parse both, and
//! [`Metric::validate`] / [`MetricRegistry::validate`] are the one set of
//! rules both apply.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::check::{check_key, check_text};
use crate::error::ModelError;

/// The longest event type name, in bytes (event types are stored per event;
/// a longer name is a mistake, not a type).
pub const EVENT_TYPE_MAX_BYTES: usize = 128;

/// The longest metric description, in bytes.
pub const DESCRIPTION_MAX_BYTES: usize = 10_000;

/// The operators of a predicate, in the order messages list them.
const OPERATORS: [&str; 8] = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"];

/// What a metric measures per unit (or, for quantiles, per variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    /// 1 if the unit has at least one matching event in its window, else 0.
    Binomial,
    /// Number of matching events in the unit's window (0 if none).
    Count,
    /// Sum of `value` over matching events in the unit's window (0 if none).
    Sum,
    /// Mean of `value` over the unit's matching events; units with none are excluded.
    Mean,
    /// Σ numerator / Σ denominator over units, each a `count` or `sum` sub-metric.
    Ratio,
    /// The q-quantile of `value` over matching events, per variant.
    Quantile,
}

impl MetricType {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Binomial => "binomial",
            MetricType::Count => "count",
            MetricType::Sum => "sum",
            MetricType::Mean => "mean",
            MetricType::Ratio => "ratio",
            MetricType::Quantile => "quantile",
        }
    }

    /// True for the types CUPED applies to.
    pub fn supports_cuped(self) -> bool {
        matches!(
            self,
            MetricType::Binomial | MetricType::Count | MetricType::Sum
        )
    }
}

/// Which direction of change is desirable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (conversion, revenue).
    #[default]
    IncreaseIsGood,
    /// Lower is better (latency, errors).
    IncreaseIsBad,
}

/// A scalar literal in a predicate: a boolean, a number or a string.
///
/// Numbers are held as `f64`; an integral number is written back without a
/// fractional part, so a stored `{"gt": 0}` is served as `{"gt": 0}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    String(String),
}

impl Scalar {
    /// True for a number that is neither infinite nor NaN.
    fn is_finite_number(&self) -> bool {
        matches!(self, Scalar::Number(x) if x.is_finite())
    }

    /// True unless a non-finite number (YAML can write `.inf` and `.nan`).
    fn is_finite(&self) -> bool {
        !matches!(self, Scalar::Number(x) if !x.is_finite())
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Number(x) => write!(f, "{x}"),
            Scalar::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// Below 2^53 every integer is exact in an `f64`, so writing it as an
/// integer loses nothing.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Bool(b) => serializer.serialize_bool(*b),
            Scalar::Number(x) if x.fract() == 0.0 && x.abs() < EXACT_INTEGER_LIMIT => {
                // Exact: the guard above bounds the magnitude.
                serializer.serialize_i64(*x as i64)
            }
            Scalar::Number(x) => serializer.serialize_f64(*x),
            Scalar::String(s) => serializer.serialize_str(s),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::String(v))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The list of an `in` or `not_in` operator.
struct ScalarList(Vec<Scalar>);

impl<'de> Deserialize<'de> for ScalarList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ScalarList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings, numbers or booleans")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ScalarList, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(s) = seq.next_element::<Scalar>()? {
                    out.push(s);
                }
                Ok(ScalarList(out))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// Comparison operators of a predicate; all given operators must hold.
///
/// An operator outside `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in` and
/// `not_in` is rejected while parsing, at the operator's own position, with a
/// message that lists the operators.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Operators {
    /// Equal to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eq: Option<Scalar>,
    /// Not equal to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ne: Option<Scalar>,
    /// Greater than.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt: Option<Scalar>,
    /// Greater than or equal to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gte: Option<Scalar>,
    /// Less than.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt: Option<Scalar>,
    /// Less than or equal to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lte: Option<Scalar>,
    /// One of.
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<Scalar>>,
    /// None of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<Scalar>>,
}

impl Operators {
    /// The single-value operators given, by name.
    fn scalars(&self) -> impl Iterator<Item = (&'static str, &Scalar)> {
        [
            ("eq", &self.eq),
            ("ne", &self.ne),
            ("gt", &self.gt),
            ("gte", &self.gte),
            ("lt", &self.lt),
            ("lte", &self.lte),
        ]
        .into_iter()
        .filter_map(|(name, s)| s.as_ref().map(|s| (name, s)))
    }

    /// The list operators given, by name.
    fn lists(&self) -> impl Iterator<Item = (&'static str, &Vec<Scalar>)> {
        [("in", &self.in_), ("not_in", &self.not_in)]
            .into_iter()
            .filter_map(|(name, l)| l.as_ref().map(|l| (name, l)))
    }
}

/// Rejects the value of an unknown operator. Failing while the value is read
/// (rather than at the key) puts the operator in the error's path, so an
/// API reports `filter.value.between`, not just `filter.value`.
struct UnknownOperator(String);

impl<'de> DeserializeSeed<'de> for UnknownOperator {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _deserializer: D) -> Result<(), D::Error> {
        Err(de::Error::custom(format!(
            "unknown operator {:?}; expected eq, ne, gt, gte, lt, lte, in or not_in",
            self.0
        )))
    }
}

/// Reads the operators of a map, whichever visitor met the map.
fn visit_operators<'de, A: MapAccess<'de>>(mut map: A) -> Result<Operators, A::Error> {
    fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
        if slot.is_some() {
            return Err(E::duplicate_field(name));
        }
        *slot = Some(value);
        Ok(())
    }
    let mut ops = Operators::default();
    while let Some(key) = map.next_key::<String>()? {
        match key.as_str() {
            "eq" => once(&mut ops.eq, map.next_value()?, "eq")?,
            "ne" => once(&mut ops.ne, map.next_value()?, "ne")?,
            "gt" => once(&mut ops.gt, map.next_value()?, "gt")?,
            "gte" => once(&mut ops.gte, map.next_value()?, "gte")?,
            "lt" => once(&mut ops.lt, map.next_value()?, "lt")?,
            "lte" => once(&mut ops.lte, map.next_value()?, "lte")?,
            "in" => once(&mut ops.in_, map.next_value::<ScalarList>()?.0, "in")?,
            "not_in" => once(&mut ops.not_in, map.next_value::<ScalarList>()?.0, "not_in")?,
            _ => map.next_value_seed(UnknownOperator(key))?,
        }
    }
    Ok(ops)
}

impl<'de> Deserialize<'de> for Operators {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OperatorsVisitor;
        impl<'de> Visitor<'de> for OperatorsVisitor {
            type Value = Operators;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of operators")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Operators, A::Error> {
                visit_operators(map)
            }
        }
        deserializer.deserialize_map(OperatorsVisitor)
    }
}

/// A predicate on one field: a bare scalar means `eq`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Predicate {
    /// Operators, all of which must hold.
    Ops(Operators),
    /// Shorthand for `{"eq": scalar}`.
    Eq(Scalar),
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // One visitor for both forms, so a bad operator is reported as such
        // instead of "matches no form".
        struct PredicateVisitor;
        impl<'de> Visitor<'de> for PredicateVisitor {
            type Value = Predicate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or an object of operators")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Predicate, E> {
                ScalarVisitor.visit_bool(v).map(Predicate::Eq)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Predicate, E> {
                ScalarVisitor.visit_i64(v).map(Predicate::Eq)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Predicate, E> {
                ScalarVisitor.visit_u64(v).map(Predicate::Eq)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Predicate, E> {
                ScalarVisitor.visit_f64(v).map(Predicate::Eq)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Predicate, E> {
                ScalarVisitor.visit_str(v).map(Predicate::Eq)
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Predicate, E> {
                ScalarVisitor.visit_string(v).map(Predicate::Eq)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Predicate, A::Error> {
                visit_operators(map).map(Predicate::Ops)
            }
        }
        deserializer.deserialize_any(PredicateVisitor)
    }
}

/// Event types matched by a filter: one name or a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventTypes {
    /// One event type.
    One(String),
    /// Any of these event types.
    Many(Vec<String>),
}

impl EventTypes {
    /// The event type names.
    pub fn names(&self) -> Vec<&str> {
        match self {
            EventTypes::One(s) => vec![s.as_str()],
            EventTypes::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl<'de> Deserialize<'de> for EventTypes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypesVisitor;
        impl<'de> Visitor<'de> for TypesVisitor {
            type Value = EventTypes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type or a list of event types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventTypes, E> {
                Ok(EventTypes::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<EventTypes, E> {
                Ok(EventTypes::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventTypes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(EventTypes::Many(out))
            }
        }
        deserializer.deserialize_any(TypesVisitor)
    }
}

/// Which events a metric counts. Every part is optional; an empty filter
/// (or none at all) matches every event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Event type(s); absent matches every type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventTypes>,
    /// Predicate on the event's numeric `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Predicate>,
    /// Predicates on event properties, by property name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Predicate>,
}

impl Filter {
    /// True when the filter matches every event.
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none() && self.value.is_none() && self.properties.is_empty()
    }

    /// Checks the filter; fields are relative to it (`type`, `value`,
    /// `properties.country`).
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(t) = &self.event_type {
            let names = t.names();
            if names.is_empty() || names.iter().any(|n| n.is_empty()) {
                return Err(ModelError::invalid(
                    "type",
                    "must be a non-empty event type or a non-empty list of them",
                ));
            }
            if names.iter().any(|n| n.len() > EVENT_TYPE_MAX_BYTES) {
                return Err(ModelError::TooLong {
                    field: "type".into(),
                    max: EVENT_TYPE_MAX_BYTES,
                });
            }
        }
        if let Some(p) = &self.value {
            check_predicate("value", p, true)?;
        }
        for (name, p) in &self.properties {
            if name.is_empty() {
                return Err(ModelError::invalid(
                    "properties",
                    "must not have an empty property name",
                ));
            }
            check_predicate(&format!("properties.{name}"), p, false)?;
        }
        Ok(())
    }
}

/// Checks one predicate; `numeric` for the event's `value`, which compares
/// with numbers only.
fn check_predicate(field: &str, p: &Predicate, numeric: bool) -> Result<(), ModelError> {
    let ops = match p {
        Predicate::Eq(s) => {
            let ok = if numeric {
                s.is_finite_number()
            } else {
                s.is_finite()
            };
            if !ok {
                let what = if numeric {
                    "a finite number"
                } else {
                    "a string, boolean or finite number"
                };
                return Err(ModelError::invalid(
                    field,
                    format!("must be {what} or an object of operators, got {s}"),
                ));
            }
            return Ok(());
        }
        Predicate::Ops(ops) => ops,
    };
    if *ops == Operators::default() {
        return Err(ModelError::invalid(
            field,
            format!(
                "has no operator; give one of {} or {}",
                OPERATORS[..7].join(", "),
                OPERATORS[7]
            ),
        ));
    }
    for (name, list) in ops.lists() {
        if list.is_empty() {
            return Err(ModelError::invalid(
                field,
                format!("has an empty {name} list"),
            ));
        }
    }
    let values = ops.scalars().chain(
        ops.lists()
            .flat_map(|(name, l)| l.iter().map(move |s| (name, s))),
    );
    for (name, s) in values {
        if numeric && !s.is_finite_number() {
            return Err(ModelError::invalid(
                field,
                format!("compares with numbers only; {name} is given {s}"),
            ));
        }
        if !s.is_finite() {
            return Err(ModelError::invalid(
                field,
                format!("takes finite numbers only; {name} is given {s}"),
            ));
        }
    }
    Ok(())
}

/// The numerator or denominator of a ratio metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubMetric {
    /// `count` or `sum`.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events; absent matches every event.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filter: Filter,
}

impl SubMetric {
    /// Checks the part; fields are relative to it (`type`, `filter.type`).
    pub fn validate(&self) -> Result<(), ModelError> {
        if !matches!(self.kind, MetricType::Count | MetricType::Sum) {
            return Err(ModelError::invalid("type", "must be count or sum"));
        }
        self.filter.validate().map_err(|e| e.at("filter"))
    }
}

/// One metric definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Unique key (`[A-Za-z0-9_.-]`, at most 128 bytes).
    pub key: String,
    /// Metric type.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events count; absent matches every event. Ratio metrics filter
    /// in their numerator and denominator instead.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filter: Filter,
    /// Desirable direction of change; absent means [`Direction::IncreaseIsGood`].
    /// Kept as given so a stored definition is served as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Cap per-unit values at this pooled percentile, in (0.5, 1) (for example 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winsorize: Option<f64>,
    /// Probability level of a quantile metric, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Numerator of a ratio metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<SubMetric>,
    /// Denominator of a ratio metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<SubMetric>,
    /// Free-text description, at most 10,000 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Metric {
    /// The desirable direction of change, the default when none is given.
    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or_default()
    }

    /// Checks the definition; fields are relative to the metric (`key`,
    /// `numerator.filter.type`).
    pub fn validate(&self) -> Result<(), ModelError> {
        check_key("key", &self.key)?;
        let kind = self.kind.as_str();
        if self.kind == MetricType::Ratio {
            let Some(n) = &self.numerator else {
                return Err(ModelError::Missing {
                    field: "numerator".into(),
                    by: "ratio metrics".into(),
                });
            };
            let Some(d) = &self.denominator else {
                return Err(ModelError::Missing {
                    field: "denominator".into(),
                    by: "ratio metrics".into(),
                });
            };
            n.validate().map_err(|e| e.at("numerator"))?;
            d.validate().map_err(|e| e.at("denominator"))?;
            if !self.filter.is_empty() {
                return Err(ModelError::NotApplicable {
                    field: "filter".into(),
                    what: "ratio metrics, which filter in numerator and denominator".into(),
                });
            }
        } else {
            self.filter.validate().map_err(|e| e.at("filter"))?;
            let part = match (&self.numerator, &self.denominator) {
                (Some(_), _) => Some("numerator"),
                (None, Some(_)) => Some("denominator"),
                (None, None) => None,
            };
            if let Some(part) = part {
                return Err(ModelError::NotApplicable {
                    field: part.into(),
                    what: format!("{kind} metrics, only to ratio metrics"),
                });
            }
        }
        match (self.kind, self.quantile) {
            (MetricType::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
            (MetricType::Quantile, Some(q)) => {
                return Err(ModelError::OutOfRange {
                    field: "quantile".into(),
                    range: "(0, 1)".into(),
                    value: q,
                })
            }
            (MetricType::Quantile, None) => {
                return Err(ModelError::Missing {
                    field: "quantile".into(),
                    by: "quantile metrics".into(),
                })
            }
            (_, Some(_)) => {
                return Err(ModelError::NotApplicable {
                    field: "quantile".into(),
                    what: format!("{kind} metrics"),
                })
            }
            (_, None) => {}
        }
        if let Some(w) = self.winsorize {
            if !(w > 0.5 && w < 1.0) {
                return Err(ModelError::OutOfRange {
                    field: "winsorize".into(),
                    range: "(0.5, 1)".into(),
                    value: w,
                });
            }
            if matches!(self.kind, MetricType::Binomial | MetricType::Quantile) {
                return Err(ModelError::NotApplicable {
                    field: "winsorize".into(),
                    what: format!("{kind} metrics"),
                });
            }
        }
        if let Some(d) = &self.description {
            check_text("description", d, DESCRIPTION_MAX_BYTES)?;
        }
        Ok(())
    }
}

/// A set of metric definitions with unique keys, in document order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRegistry {
    /// The metrics, in document order.
    pub metrics: Vec<Metric>,
}

impl MetricRegistry {
    /// The metric with this key.
    pub fn get(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// Checks every metric and that keys are unique; fields are prefixed
    /// with the metric's position (`metrics[2].numerator.filter.type`).
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut seen = BTreeSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let at = format!("metrics[{i}]");
            m.validate().map_err(|e| e.at(&at))?;
            if !seen.insert(m.key.as_str()) {
                return Err(ModelError::DuplicateKey {
                    field: format!("{at}.key"),
                    key: m.key.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn metric(v: Value) -> Metric {
        serde_json::from_value(v).unwrap()
    }

    /// Parses and validates; returns the field and message of the error.
    fn reject(v: Value) -> (String, String) {
        let e = metric(v.clone())
            .validate()
            .expect_err(&format!("{v} should be rejected"));
        (e.field().to_owned(), e.to_string())
    }

    fn accept(v: Value) {
        let m = metric(v.clone());
        assert_eq!(m.validate(), Ok(()), "{v}");
    }

    fn parse_error(v: Value) -> String {
        serde_json::from_value::<Metric>(v).unwrap_err().to_string()
    }

    #[test]
    fn every_metric_type_is_accepted() {
        accept(json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}));
        accept(
            json!({"key": "purchases", "type": "count", "filter": {"type": ["purchase", "refund"]}}),
        );
        accept(
            json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"}, "winsorize": 0.999}),
        );
        accept(
            json!({"key": "order_value", "type": "mean", "filter": {"type": "purchase", "value": {"gt": 0}}}),
        );
        accept(json!({"key": "aov", "type": "ratio",
            "numerator": {"type": "sum", "filter": {"type": "purchase"}},
            "denominator": {"type": "count", "filter": {"type": "purchase"}}}));
        accept(
            json!({"key": "p95", "type": "quantile", "quantile": 0.95, "filter": {"type": "page_load"},
            "direction": "increase_is_bad", "description": "page load time"}),
        );
    }

    #[test]
    fn filter_is_optional_and_absent_matches_every_event() {
        let m = metric(json!({"key": "events", "type": "count"}));
        assert_eq!(m.validate(), Ok(()));
        assert!(m.filter.is_empty());
        accept(json!({"key": "events", "type": "count", "filter": {}}));
        accept(
            json!({"key": "r", "type": "ratio", "numerator": {"type": "count"},
            "denominator": {"type": "count"}}),
        );
    }

    #[test]
    fn key_is_checked() {
        assert_eq!(
            reject(json!({"key": "", "type": "count"})),
            ("key".into(), "key must not be empty".into())
        );
        assert_eq!(
            reject(json!({"key": "has space", "type": "count"})),
            (
                "key".into(),
                "key \"has space\" may contain only letters, digits, '_', '-' and '.'".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "k".repeat(129), "type": "count"})),
            ("key".into(), "key must be at most 128 bytes".into())
        );
    }

    #[test]
    fn event_types_are_non_empty_and_at_most_128_bytes() {
        let msg = "filter.type must be a non-empty event type or a non-empty list of them";
        for t in [json!(""), json!([]), json!(["a", ""])] {
            assert_eq!(
                reject(json!({"key": "m", "type": "count", "filter": {"type": t}})),
                ("filter.type".into(), msg.into())
            );
        }
        accept(json!({"key": "m", "type": "count", "filter": {"type": "t".repeat(128)}}));
        for t in [json!("t".repeat(129)), json!(["a", "t".repeat(129)])] {
            assert_eq!(
                reject(json!({"key": "m", "type": "count", "filter": {"type": t}})),
                (
                    "filter.type".into(),
                    "filter.type must be at most 128 bytes".into()
                )
            );
        }
        // The rule reaches into ratio parts, with their path.
        assert_eq!(
            reject(json!({"key": "r", "type": "ratio",
                "numerator": {"type": "count", "filter": {"type": "t".repeat(129)}},
                "denominator": {"type": "count"}})),
            (
                "numerator.filter.type".into(),
                "numerator.filter.type must be at most 128 bytes".into()
            )
        );
        assert!(
            parse_error(json!({"key": "m", "type": "count", "filter": {"type": 3}}))
                .contains("expected an event type or a list of event types")
        );
    }

    #[test]
    fn value_compares_with_numbers_only() {
        accept(json!({"key": "m", "type": "sum", "filter": {"value": 3}}));
        accept(json!({"key": "m", "type": "sum",
            "filter": {"value": {"gte": 1, "lt": 2.5, "in": [1, 2], "not_in": [3]}}}));
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "filter": {"value": {"gt": "x"}}})),
            (
                "filter.value".into(),
                "filter.value compares with numbers only; gt is given \"x\"".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "filter": {"value": {"in": [1, true]}}})),
            (
                "filter.value".into(),
                "filter.value compares with numbers only; in is given true".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "filter": {"value": "x"}})),
            (
                "filter.value".into(),
                "filter.value must be a finite number or an object of operators, got \"x\"".into()
            )
        );
    }

    #[test]
    fn properties_take_any_finite_scalar() {
        accept(
            json!({"key": "m", "type": "count", "filter": {"properties": {
            "country": {"in": ["US", "CA"]}, "is_bot": false, "tier": {"gte": 2}}}}),
        );
        let mut m =
            metric(json!({"key": "m", "type": "count", "filter": {"properties": {"x": 1}}}));
        m.filter
            .properties
            .insert("x".into(), Predicate::Eq(Scalar::Number(f64::NAN)));
        let e = m.validate().unwrap_err();
        assert_eq!(e.field(), "filter.properties.x");
        let mut m = metric(
            json!({"key": "m", "type": "count", "filter": {"properties": {"x": {"gt": 1}}}}),
        );
        m.filter.properties.insert(
            "x".into(),
            Predicate::Ops(Operators {
                gt: Some(Scalar::Number(f64::INFINITY)),
                ..Operators::default()
            }),
        );
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "filter.properties.x takes finite numbers only; gt is given inf"
        );
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "filter": {"properties": {"": 1}}})),
            (
                "filter.properties".into(),
                "filter.properties must not have an empty property name".into()
            )
        );
    }

    #[test]
    fn predicates_need_an_operator_and_non_empty_lists() {
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "filter": {"properties": {"c": {}}}})),
            (
                "filter.properties.c".into(),
                "filter.properties.c has no operator; give one of eq, ne, gt, gte, lt, lte, in or not_in"
                    .into()
            )
        );
        for op in ["in", "not_in"] {
            assert_eq!(
                reject(
                    json!({"key": "m", "type": "count", "filter": {"properties": {"c": {op: []}}}})
                ),
                (
                    "filter.properties.c".into(),
                    format!("filter.properties.c has an empty {op} list")
                )
            );
        }
    }

    #[test]
    fn unknown_operators_are_rejected_in_the_documents_terms() {
        let e = parse_error(json!({"key": "m", "type": "mean",
            "filter": {"type": "a", "value": {"between": 1}}}));
        assert!(
            e.starts_with(
                "unknown operator \"between\"; expected eq, ne, gt, gte, lt, lte, in or not_in"
            ),
            "{e}"
        );
        let e = parse_error(json!({"key": "m", "type": "count",
            "filter": {"properties": {"c": {"foo": "x"}}}}));
        assert!(e.starts_with("unknown operator \"foo\""), "{e}");
        assert!(parse_error(json!({"key": "m", "type": "count",
            "filter": {"value": {"in": 3}}}))
        .contains("expected a list of strings, numbers or booleans"));
        assert!(parse_error(json!({"key": "m", "type": "count",
            "filter": {"value": [1]}}))
        .contains("expected a string, number, boolean or an object of operators"));
        // As for every optional field, null is the same as absent.
        accept(json!({"key": "m", "type": "count", "filter": {"value": null}}));
        assert!(parse_error(json!({"key": "m", "type": "count",
            "filter": {"value": {"eq": [1]}}}))
        .contains("expected a string, number or boolean"));
    }

    #[test]
    fn duplicate_operators_are_rejected() {
        let e = serde_json::from_str::<Operators>(r#"{"gt": 1, "gt": 2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `gt`"), "{e}");
    }

    #[test]
    fn ratio_rules() {
        assert_eq!(
            reject(json!({"key": "r", "type": "ratio"})),
            (
                "numerator".into(),
                "numerator is required by ratio metrics".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "r", "type": "ratio", "numerator": {"type": "sum"}})),
            (
                "denominator".into(),
                "denominator is required by ratio metrics".into()
            )
        );
        assert_eq!(
            reject(
                json!({"key": "r", "type": "ratio", "numerator": {"type": "sum"},
                "denominator": {"type": "mean"}})
            ),
            (
                "denominator.type".into(),
                "denominator.type must be count or sum".into()
            )
        );
        assert_eq!(
            reject(
                json!({"key": "r", "type": "ratio", "numerator": {"type": "sum"},
                "denominator": {"type": "count"}, "filter": {"type": "a"}})
            ),
            (
                "filter".into(),
                "filter does not apply to ratio metrics, which filter in numerator and denominator"
                    .into()
            )
        );
        assert_eq!(
            reject(json!({"key": "c", "type": "count", "numerator": {"type": "sum"}})),
            (
                "numerator".into(),
                "numerator does not apply to count metrics, only to ratio metrics".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "c", "type": "sum", "denominator": {"type": "sum"}})).0,
            "denominator"
        );
    }

    #[test]
    fn quantile_rules() {
        for q in [0.0, 1.0, 1.5, -0.1] {
            assert_eq!(
                reject(json!({"key": "q", "type": "quantile", "quantile": q})),
                (
                    "quantile".into(),
                    format!("quantile must be in (0, 1), got {q}")
                )
            );
        }
        assert_eq!(
            reject(json!({"key": "q", "type": "quantile"})),
            (
                "quantile".into(),
                "quantile is required by quantile metrics".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "q", "type": "mean", "quantile": 0.5})),
            (
                "quantile".into(),
                "quantile does not apply to mean metrics".into()
            )
        );
    }

    #[test]
    fn winsorize_rules() {
        for w in [0.5, 1.0, 2.0] {
            assert_eq!(
                reject(json!({"key": "s", "type": "sum", "winsorize": w})),
                (
                    "winsorize".into(),
                    format!("winsorize must be in (0.5, 1), got {w}")
                )
            );
        }
        accept(json!({"key": "s", "type": "mean", "winsorize": 0.51}));
        accept(
            json!({"key": "r", "type": "ratio", "numerator": {"type": "sum"},
            "denominator": {"type": "count"}, "winsorize": 0.99}),
        );
        assert_eq!(
            reject(json!({"key": "b", "type": "binomial", "winsorize": 0.99})),
            (
                "winsorize".into(),
                "winsorize does not apply to binomial metrics".into()
            )
        );
        assert_eq!(
            reject(json!({"key": "q", "type": "quantile", "quantile": 0.5, "winsorize": 0.99})),
            (
                "winsorize".into(),
                "winsorize does not apply to quantile metrics".into()
            )
        );
    }

    #[test]
    fn description_is_at_most_10000_bytes() {
        accept(json!({"key": "m", "type": "count", "description": "d".repeat(10_000)}));
        assert_eq!(
            reject(json!({"key": "m", "type": "count", "description": "d".repeat(10_001)})),
            (
                "description".into(),
                "description must be at most 10000 bytes".into()
            )
        );
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        assert!(
            parse_error(json!({"key": "m", "type": "count", "filtr": {}}))
                .contains("unknown field `filtr`")
        );
        assert!(
            parse_error(json!({"key": "m", "type": "median"})).contains("unknown variant `median`")
        );
        assert!(
            parse_error(json!({"key": "m", "type": "count", "filter": {"typ": "a"}}))
                .contains("unknown field `typ`")
        );
    }

    #[test]
    fn registry_prefixes_fields_and_rejects_duplicate_keys() {
        let reg: MetricRegistry = serde_json::from_value(json!({"metrics": [
            {"key": "c", "type": "count"},
            {"key": "r", "type": "ratio", "numerator": {"type": "sum"},
             "denominator": {"type": "count", "filter": {"type": ""}}}]}))
        .unwrap();
        let e = reg.validate().unwrap_err();
        assert_eq!(e.field(), "metrics[1].denominator.filter.type");
        assert!(e
            .to_string()
            .starts_with("metrics[1].denominator.filter.type must"));
        let reg: MetricRegistry = serde_json::from_value(json!({"metrics": [
            {"key": "c", "type": "count"}, {"key": "c", "type": "sum"}]}))
        .unwrap();
        let e = reg.validate().unwrap_err();
        assert_eq!(
            (e.field(), e.to_string().as_str()),
            ("metrics[1].key", "metrics[1].key: duplicate key \"c\"")
        );
        let reg: MetricRegistry = serde_json::from_value(json!({"metrics": [
            {"key": "c", "type": "count"}, {"key": "s", "type": "sum"}]}))
        .unwrap();
        assert_eq!(reg.validate(), Ok(()));
        assert_eq!(reg.get("s").map(|m| m.kind), Some(MetricType::Sum));
        assert!(reg.get("x").is_none());
    }

    /// Definitions as the control plane stored them before these types
    /// existed (filters held as raw JSON) read back and write out unchanged.
    #[test]
    fn stored_definitions_round_trip_unchanged() {
        for v in [
            json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
            json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase", "value": {"gt": 0}}}),
            json!({"key": "page_load_p95", "type": "quantile", "filter": {"type": "page_load"},
                "direction": "increase_is_bad", "quantile": 0.95}),
            json!({"key": "aov", "type": "ratio", "winsorize": 0.99, "direction": "increase_is_good",
                "numerator": {"type": "sum", "filter": {"type": "purchase"}},
                "denominator": {"type": "count", "filter": {"type": ["purchase", "refund"]}}}),
            json!({"key": "us", "type": "count", "filter": {"type": "purchase", "value": 2.5,
                "properties": {"country": {"in": ["US", "CA"]}, "bot": false, "tier": {"gte": 2, "ne": 3.5},
                "plan": "pro"}}, "description": "US purchases"}),
        ] {
            let m = metric(v.clone());
            assert_eq!(m.validate(), Ok(()), "{v}");
            assert_eq!(serde_json::to_value(&m).unwrap(), v);
        }
    }

    #[test]
    fn every_type_round_trips() {
        let m = metric(
            json!({"key": "k", "type": "mean", "filter": {"type": ["a", "b"],
            "value": {"eq": 1, "ne": 2, "gt": 3, "gte": 4, "lt": 5.5, "lte": 6, "in": [7], "not_in": [8, 9]},
            "properties": {"p": {"eq": "x"}, "q": true}}, "winsorize": 0.9, "description": "d"}),
        );
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Metric>(&text).unwrap(), m);
        let reg = MetricRegistry {
            metrics: vec![m.clone()],
        };
        let text = serde_json::to_string(&reg).unwrap();
        assert_eq!(serde_json::from_str::<MetricRegistry>(&text).unwrap(), reg);
        for t in [
            MetricType::Binomial,
            MetricType::Count,
            MetricType::Sum,
            MetricType::Mean,
            MetricType::Ratio,
            MetricType::Quantile,
        ] {
            let s = serde_json::to_string(&t).unwrap();
            assert_eq!(s, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<MetricType>(&s).unwrap(), t);
        }
        for (d, s) in [
            (Direction::IncreaseIsGood, "\"increase_is_good\""),
            (Direction::IncreaseIsBad, "\"increase_is_bad\""),
        ] {
            assert_eq!(serde_json::to_string(&d).unwrap(), s);
            assert_eq!(serde_json::from_str::<Direction>(s).unwrap(), d);
        }
        for (s, text) in [
            (Scalar::Bool(true), "true"),
            (Scalar::Number(3.0), "3"),
            (Scalar::Number(-2.5), "-2.5"),
            (Scalar::String("x".into()), "\"x\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
            assert_eq!(serde_json::from_str::<Scalar>(text).unwrap(), s);
        }
        // Too large to be exact as an integer: written as a float.
        assert_eq!(
            serde_json::to_string(&Scalar::Number(1e300)).unwrap(),
            "1e+300"
        );
        for (p, text) in [
            (Predicate::Eq(Scalar::Number(1.0)), "1"),
            (
                Predicate::Ops(Operators {
                    in_: Some(vec![Scalar::String("US".into())]),
                    ..Operators::default()
                }),
                r#"{"in":["US"]}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
            assert_eq!(serde_json::from_str::<Predicate>(text).unwrap(), p);
        }
        for (t, text) in [
            (EventTypes::One("a".into()), "\"a\""),
            (
                EventTypes::Many(vec!["a".into(), "b".into()]),
                r#"["a","b"]"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), text);
            assert_eq!(serde_json::from_str::<EventTypes>(text).unwrap(), t);
        }
        let sub = SubMetric {
            kind: MetricType::Count,
            filter: Filter::default(),
        };
        assert_eq!(serde_json::to_string(&sub).unwrap(), r#"{"type":"count"}"#);
        assert_eq!(
            serde_json::from_str::<SubMetric>(r#"{"type":"count"}"#).unwrap(),
            sub
        );
        assert_eq!(m.direction(), Direction::IncreaseIsGood);
    }
}
