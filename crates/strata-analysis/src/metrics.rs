//! The metric registry: metric definitions in JSON or YAML.
//!
//! A registry document is `{"metrics": [METRIC, ...]}`; see
//! `docs/data-model.md` for the format and the per-unit semantics of each
//! metric type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (conversion, revenue).
    #[default]
    IncreaseIsGood,
    /// Lower is better (latency, errors).
    IncreaseIsBad,
}

/// A scalar literal in a predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    String(String),
}

/// Comparison operators of a predicate; all given operators must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operators {
    /// Equal to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Scalar>,
    /// Not equal to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<Scalar>,
    /// Greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Scalar>,
    /// Greater than or equal to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<Scalar>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Scalar>,
    /// Less than or equal to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<Scalar>,
    /// One of.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<Scalar>>,
    /// None of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<Scalar>>,
}

/// A predicate on one field: a bare scalar means `eq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Predicate {
    /// Operators.
    Ops(Operators),
    /// Shorthand for `{"eq": scalar}`.
    Eq(Scalar),
}

/// Event types matched by a filter: one name or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Which events a metric counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Event type(s); absent matches every type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventTypes>,
    /// Predicate on the event's `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Predicate>,
    /// Predicates on event properties, by property name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Predicate>,
}

/// The numerator or denominator of a ratio metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubMetric {
    /// `count` or `sum`.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events.
    #[serde(default)]
    pub filter: Filter,
}

/// One metric definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Unique key.
    pub key: String,
    /// Metric type.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which events count (not used by ratio metrics, whose parts carry their own).
    #[serde(default)]
    pub filter: Filter,
    /// Desirable direction of change.
    #[serde(default)]
    pub direction: Direction,
    /// Cap per-unit values at this pooled percentile (for example 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winsorize: Option<f64>,
    /// Probability level of a quantile metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Numerator of a ratio metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<SubMetric>,
    /// Denominator of a ratio metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<SubMetric>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A validated set of metric definitions, by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRegistry {
    /// The metrics, in document order.
    pub metrics: Vec<Metric>,
}

impl MetricRegistry {
    /// Parses a registry from JSON or YAML text; `name` is used in messages
    /// and its extension (`.yaml`/`.yml`) selects YAML.
    pub fn from_str_named(text: &str, name: &Path) -> Result<Self> {
        let reg: MetricRegistry = parse_document(text, name)?;
        reg.validate(&name.display().to_string())?;
        Ok(reg)
    }

    /// Reads and validates a registry file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = read(path)?;
        Self::from_str_named(&text, path)
    }

    /// The metric with this key.
    pub fn get(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// Checks the definitions; `doc` names the document in messages.
    pub fn validate(&self, doc: &str) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let f = |field: &str| format!("metrics[{i}].{field}");
            if m.key.trim().is_empty() {
                return Err(Error::invalid(doc, f("key"), "must not be empty"));
            }
            if !seen.insert(m.key.as_str()) {
                return Err(Error::invalid(
                    doc,
                    f("key"),
                    format!("duplicate metric key `{}`", m.key),
                ));
            }
            let is_ratio = m.kind == MetricType::Ratio;
            match (is_ratio, &m.numerator, &m.denominator) {
                (true, Some(n), Some(d)) => {
                    for (name, part) in [("numerator", n), ("denominator", d)] {
                        if !matches!(part.kind, MetricType::Count | MetricType::Sum) {
                            return Err(Error::invalid(
                                doc,
                                f(&format!("{name}.type")),
                                "a ratio's parts must be `count` or `sum`",
                            ));
                        }
                        check_filter(doc, &f(&format!("{name}.filter")), &part.filter)?;
                    }
                    if m.filter != Filter::default() {
                        return Err(Error::invalid(
                            doc,
                            f("filter"),
                            "a ratio metric filters in its numerator and denominator",
                        ));
                    }
                }
                (true, None, _) => {
                    return Err(Error::invalid(
                        doc,
                        f("numerator"),
                        "required by ratio metrics",
                    ))
                }
                (true, _, None) => {
                    return Err(Error::invalid(
                        doc,
                        f("denominator"),
                        "required by ratio metrics",
                    ))
                }
                (false, Some(_), _) | (false, _, Some(_)) => {
                    return Err(Error::invalid(
                        doc,
                        f("numerator"),
                        "only ratio metrics have a numerator and denominator",
                    ))
                }
                (false, None, None) => check_filter(doc, &f("filter"), &m.filter)?,
            }
            match (m.kind, m.quantile) {
                (MetricType::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
                (MetricType::Quantile, Some(_)) => {
                    return Err(Error::invalid(doc, f("quantile"), "must be in (0, 1)"))
                }
                (MetricType::Quantile, None) => {
                    return Err(Error::invalid(
                        doc,
                        f("quantile"),
                        "required by quantile metrics",
                    ))
                }
                (_, Some(_)) => {
                    return Err(Error::invalid(
                        doc,
                        f("quantile"),
                        "only quantile metrics have a quantile",
                    ))
                }
                (_, None) => {}
            }
            if let Some(w) = m.winsorize {
                if !(w > 0.5 && w < 1.0) {
                    return Err(Error::invalid(doc, f("winsorize"), "must be in (0.5, 1)"));
                }
                if matches!(m.kind, MetricType::Binomial | MetricType::Quantile) {
                    return Err(Error::invalid(
                        doc,
                        f("winsorize"),
                        format!("does not apply to {} metrics", m.kind.as_str()),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_filter(doc: &str, field: &str, filter: &Filter) -> Result<()> {
    if let Some(t) = &filter.event_type {
        if t.names().is_empty() || t.names().iter().any(|n| n.is_empty()) {
            return Err(Error::invalid(
                doc,
                format!("{field}.type"),
                "event types must be non-empty",
            ));
        }
    }
    let preds = filter
        .value
        .iter()
        .map(|p| (format!("{field}.value"), p))
        .chain(
            filter
                .properties
                .iter()
                .map(|(k, p)| (format!("{field}.properties.{k}"), p)),
        );
    for (name, p) in preds {
        if let Predicate::Ops(ops) = p {
            if *ops == Operators::default() {
                return Err(Error::invalid(doc, name, "no operator given"));
            }
            if ops.in_.as_ref().is_some_and(Vec::is_empty)
                || ops.not_in.as_ref().is_some_and(Vec::is_empty)
            {
                return Err(Error::invalid(
                    doc,
                    name,
                    "`in`/`not_in` lists must not be empty",
                ));
            }
        }
        if name.ends_with(".value") {
            let numeric =
                |s: &Option<Scalar>| !matches!(s, Some(Scalar::String(_)) | Some(Scalar::Bool(_)));
            let ok = match p {
                Predicate::Eq(s) => matches!(s, Scalar::Number(_)),
                Predicate::Ops(o) => {
                    numeric(&o.eq)
                        && numeric(&o.ne)
                        && numeric(&o.gt)
                        && numeric(&o.gte)
                        && numeric(&o.lt)
                        && numeric(&o.lte)
                        && o.in_
                            .iter()
                            .chain(&o.not_in)
                            .flatten()
                            .all(|s| matches!(s, Scalar::Number(_)))
                }
            };
            if !ok {
                return Err(Error::invalid(
                    doc,
                    name,
                    "`value` is numeric: compare it with numbers",
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON or YAML (chosen by the extension of `name`, else by content).
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(text: &str, name: &Path) -> Result<T> {
    let ext = name
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = match ext.as_deref() {
        Some("yaml" | "yml") => true,
        Some("json") => false,
        _ => !text.trim_start().starts_with(['{', '[']),
    };
    if yaml {
        serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: name.to_path_buf(),
            location: e
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default(),
            message: strip_location(&e.to_string()),
        })
    } else {
        serde_json::from_str(text).map_err(|e| Error::Parse {
            path: name.to_path_buf(),
            location: format!("line {} column {}: ", e.line(), e.column()),
            message: strip_location(&e.to_string()),
        })
    }
}

/// Removes a trailing " at line L column C" that the parsers append.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
