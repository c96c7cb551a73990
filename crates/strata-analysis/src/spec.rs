//! The experiment analysis spec: which experiment, variants, window, metrics
//! and statistical settings.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strata_stats::multiple::Correction;

use crate::error::{Error, Result};
use crate::metrics::{parse_document, read, MetricRegistry};

/// One variant and its configured traffic weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// Variant key, as logged in exposures.
    pub key: String,
    /// Traffic weight (any positive scale).
    pub weight: f64,
}

/// Sequential testing of the primary metric (the platform's one enum, shared
/// with the control plane's pre-registration).
pub use strata_model::SequentialMethod;

/// The pre-registered analysis settings (intent-to-treat or per-protocol,
/// the multiple-testing correction, CUPED), shared with the control plane:
/// a spec file states them with the names and checks an experiment does.
pub use strata_model::{AnalysisMode, CupedSpec, MultipleTesting};

/// The strata-stats correction of a [`MultipleTesting`] setting.
pub fn correction(m: MultipleTesting) -> Correction {
    match m {
        MultipleTesting::None => Correction::None,
        MultipleTesting::Bonferroni => Correction::Bonferroni,
        MultipleTesting::Holm => Correction::Holm,
        MultipleTesting::BenjaminiHochberg => Correction::BenjaminiHochberg,
    }
}

pub(crate) fn default_alpha() -> f64 {
    0.05
}
pub(crate) fn default_srm_alpha() -> f64 {
    0.001
}
fn default_skew() -> f64 {
    5.0
}
pub(crate) fn default_novelty_days() -> u32 {
    7
}

/// An experiment analysis spec (JSON or YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Experiment key, as logged in exposures.
    pub key: String,
    /// Key of the control variant.
    pub control: String,
    /// Variants and weights.
    pub variants: Vec<VariantSpec>,
    /// Start of the experiment (RFC 3339).
    pub start: String,
    /// End of the experiment (RFC 3339, exclusive).
    pub end: String,
    /// Primary metric key.
    pub primary: String,
    /// Secondary metric keys.
    #[serde(default)]
    pub secondary: Vec<String>,
    /// Guardrail metric keys.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// Two-sided significance level.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Planned power (informational).
    #[serde(default)]
    pub power: Option<f64>,
    /// Planned minimum detectable effect (informational).
    #[serde(default)]
    pub mde: Option<f64>,
    /// Planned total number of units across variants.
    #[serde(default)]
    pub planned_units: Option<u64>,
    /// Sequential method for the primary metric.
    #[serde(default)]
    pub sequential: SequentialMethod,
    /// CUPED settings; absent or null for off.
    #[serde(default)]
    pub cuped: Option<CupedSpec>,
    /// Exposure attributes to break results down by.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Threshold of the sample ratio mismatch check.
    #[serde(default = "default_srm_alpha")]
    pub srm_alpha: f64,
    /// Correction over non-primary metrics.
    #[serde(default)]
    pub multiple_testing: MultipleTesting,
    /// Intent-to-treat or per-protocol.
    #[serde(default)]
    pub analysis: AnalysisMode,
    /// Events up to this many seconds before a unit's first exposure still count (clock skew).
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: f64,
    /// Length of the early window of the novelty report, in days since exposure.
    #[serde(default = "default_novelty_days")]
    pub novelty_days: u32,
    /// Days the experiment must run before a look may decide `ship`.
    #[serde(default = "strata_model::plan::default_min_duration_days")]
    pub min_duration_days: u32,
    /// Whether results carry the Bayesian summary of each comparison.
    #[serde(default)]
    pub bayesian: bool,
    /// Whether only exposures at or after `start` count. An experiment's
    /// exposures all follow its start (earlier ones, within clock skew,
    /// count); a population whose membership changes at `start` — the
    /// global holdout after a new salt — has earlier exposures that belong
    /// to an earlier period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exposures_since_start: bool,
}

/// A spec checked against itself and the metric registry, with parsed times.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    /// The spec as written.
    pub spec: AnalysisSpec,
    /// Parsed `start`.
    pub start: DateTime<Utc>,
    /// Parsed `end`.
    pub end: DateTime<Utc>,
}

impl ValidSpec {
    /// Variant keys with the control first, then the others in spec order.
    pub fn variant_order(&self) -> Vec<&VariantSpec> {
        let s = &self.spec;
        s.variants
            .iter()
            .filter(|v| v.key == s.control)
            .chain(s.variants.iter().filter(|v| v.key != s.control))
            .collect()
    }

    /// Metric keys with their roles, primary first.
    pub fn metric_roles(&self) -> Vec<(&str, strata_stats::MetricRole)> {
        use strata_stats::MetricRole;
        let s = &self.spec;
        std::iter::once((s.primary.as_str(), MetricRole::Primary))
            .chain(
                s.secondary
                    .iter()
                    .map(|k| (k.as_str(), MetricRole::Secondary)),
            )
            .chain(
                s.guardrails
                    .iter()
                    .map(|k| (k.as_str(), MetricRole::Guardrail)),
            )
            .collect()
    }
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl AnalysisSpec {
    /// The analysis an experiment pre-registered: its variants and weights,
    /// control, start (`started_at`), end (`ended_at`, or `as_of` while it
    /// runs), primary, secondary and guardrail metrics, alpha, minimum
    /// detectable effect, planned units, sequential method and the analysis
    /// settings of `strata_model::plan` (analysis mode, correction, CUPED,
    /// segments, minimum duration, Bayesian summary). The definition's
    /// guardrails may name guardrail definitions; the caller passes them
    /// resolved to metric keys as `guardrail_metrics`. Settings the
    /// definition does not carry (the SRM threshold, the clock skew, the
    /// novelty window) take their defaults.
    pub fn from_experiment(
        def: &strata_model::ExperimentDefinition,
        guardrail_metrics: Vec<String>,
        as_of: DateTime<Utc>,
    ) -> Result<Self> {
        let doc = format!("experiment {}", def.key);
        let model = |e: strata_model::ModelError| Error::Invalid {
            document: doc.clone(),
            field: e.field().to_owned(),
            reason: e.to_string(),
        };
        let start = def.start().map_err(model)?.to_owned();
        let end = match def.ended_at.as_deref() {
            Some(end) => end.to_owned(),
            None => as_of.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        };
        Ok(AnalysisSpec {
            key: def.key.clone(),
            control: def.control().map_err(model)?.key.clone(),
            variants: def
                .variants
                .iter()
                .map(|v| VariantSpec {
                    key: v.key.clone(),
                    weight: f64::from(v.weight),
                })
                .collect(),
            start,
            end,
            primary: def.primary_metric.clone(),
            secondary: def.secondary_metrics.clone(),
            guardrails: guardrail_metrics,
            alpha: def.alpha,
            power: None,
            mde: Some(def.mde),
            planned_units: Some(def.planned_units),
            sequential: def.sequential,
            cuped: def.cuped,
            segments: def.segments.clone(),
            srm_alpha: default_srm_alpha(),
            multiple_testing: def.multiple_testing,
            analysis: def.analysis,
            clock_skew_seconds: default_skew(),
            novelty_days: default_novelty_days(),
            min_duration_days: def.min_duration_days,
            bayesian: def.bayesian,
            exposures_since_start: false,
        })
    }
}

impl AnalysisSpec {
    /// [`AnalysisSpec::from_experiment`] with the definition's guardrails
    /// resolved against the platform's registry and guardrail definitions
    /// (a definition stands for the metric it watches, a metric key for
    /// itself), then validated against `registry`: the spec of a stored
    /// experiment, as every in-process or remote look of it uses. A metric
    /// watched by several guardrails, or also the primary or a secondary
    /// metric, is analysed once, in its first role: the automatic monitor
    /// tests each guardrail definition on its own, and the analysis reports
    /// each metric once.
    pub fn pre_registered(
        def: &strata_model::ExperimentDefinition,
        registry: &MetricRegistry,
        guardrails: &[strata_model::GuardrailDef],
        as_of: DateTime<Utc>,
    ) -> Result<ValidSpec> {
        let doc = format!("experiment {}", def.key);
        let metric_keys: Vec<&str> = registry.metrics.iter().map(|m| m.key.as_str()).collect();
        let guardrail_metrics =
            strata_model::guardrail::resolve(&def.guardrails, guardrails, &metric_keys)
                .map_err(|e| Error::invalid(&doc, e.field(), e.reason()))?
                .into_iter()
                .map(|g| g.metric);
        let seen: BTreeSet<&str> = std::iter::once(def.primary_metric.as_str())
            .chain(def.secondary_metrics.iter().map(String::as_str))
            .collect();
        let mut unique = Vec::new();
        for m in guardrail_metrics {
            if !seen.contains(m.as_str()) && !unique.contains(&m) {
                unique.push(m);
            }
        }
        Self::from_experiment(def, unique, as_of)?.validate(&doc, registry)
    }
}

impl AnalysisSpec {
    /// Parses a spec from JSON or YAML text; `name` is used in messages.
    pub fn from_str_named(text: &str, name: &Path) -> Result<Self> {
        parse_document(text, name)
    }

    /// Reads a spec file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = read(path)?;
        Self::from_str_named(&text, path)
    }

    /// Checks the spec against itself and the registry; `doc` names the spec in messages.
    pub fn validate(self, doc: &str, metrics: &MetricRegistry) -> Result<ValidSpec> {
        let bad = |field: &str, reason: String| Error::invalid(doc, field, reason);
        if self.key.trim().is_empty() {
            return Err(bad("key", "must not be empty".into()));
        }
        if self.variants.len() < 2 {
            return Err(bad(
                "variants",
                "a control and at least one treatment are needed".into(),
            ));
        }
        let mut keys = BTreeSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            if !keys.insert(v.key.as_str()) {
                return Err(bad(
                    &format!("variants[{i}].key"),
                    format!("duplicate variant `{}`", v.key),
                ));
            }
            if !(v.weight > 0.0 && v.weight.is_finite()) {
                return Err(bad(
                    &format!("variants[{i}].weight"),
                    "must be positive".into(),
                ));
            }
        }
        if !keys.contains(self.control.as_str()) {
            return Err(bad(
                "control",
                format!("unknown variant `{}` (not in `variants`)", self.control),
            ));
        }
        let start = parse_time(&self.start).ok_or_else(|| {
            bad(
                "start",
                format!("`{}` is not an RFC 3339 timestamp", self.start),
            )
        })?;
        let end = parse_time(&self.end).ok_or_else(|| {
            bad(
                "end",
                format!("`{}` is not an RFC 3339 timestamp", self.end),
            )
        })?;
        if end <= start {
            return Err(bad("end", "must be after `start`".into()));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(bad("alpha", "must be in (0, 1)".into()));
        }
        if !(self.srm_alpha > 0.0 && self.srm_alpha < 1.0) {
            return Err(bad("srm_alpha", "must be in (0, 1)".into()));
        }
        if !(self.clock_skew_seconds >= 0.0 && self.clock_skew_seconds.is_finite()) {
            return Err(bad("clock_skew_seconds", "must be non-negative".into()));
        }
        if self.novelty_days == 0 {
            return Err(bad("novelty_days", "must be positive".into()));
        }
        let model = |e: strata_model::ModelError| Error::invalid(doc, e.field(), e.reason());
        strata_model::plan::check_cuped(self.cuped.as_ref()).map_err(model)?;
        strata_model::plan::check_segments(&self.segments).map_err(model)?;
        strata_model::plan::check_min_duration(self.min_duration_days).map_err(model)?;
        if self.sequential == SequentialMethod::GroupSequential
            && self
                .planned_units
                .is_none_or(|n| n < self.variants.len() as u64)
        {
            return Err(bad(
                "planned_units",
                "group_sequential needs the planned number of units".into(),
            ));
        }
        let mut used = BTreeSet::new();
        let refs = std::iter::once(("primary".to_string(), &self.primary))
            .chain(
                self.secondary
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (format!("secondary[{i}]"), k)),
            )
            .chain(
                self.guardrails
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (format!("guardrails[{i}]"), k)),
            );
        for (field, key) in refs {
            if metrics.get(key).is_none() {
                return Err(bad(&field, format!("unknown metric `{key}`")));
            }
            if !used.insert(key.as_str()) {
                return Err(bad(&field, format!("metric `{key}` is listed twice")));
            }
        }
        Ok(ValidSpec {
            spec: self,
            start,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(ended_at: Option<&str>) -> strata_model::ExperimentDefinition {
        serde_json::from_value(serde_json::json!({
            "key": "exp_checkout", "owner_team": "checkout", "status": "running",
            "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 3}],
            "primary_metric": "conversion", "secondary_metrics": ["revenue"],
            "guardrails": ["latency_guard"], "mde": 0.02, "planned_units": 5000,
            "alpha": 0.01, "sequential": "group_sequential",
            "started_at": "2026-01-01T00:00:00Z", "ended_at": ended_at
        }))
        .unwrap()
    }

    #[test]
    fn a_stored_experiment_is_analysed_as_pre_registered() {
        let as_of = parse_time("2026-01-08T12:00:00Z").unwrap();
        let spec =
            AnalysisSpec::from_experiment(&definition(None), vec!["p95_latency".into()], as_of)
                .unwrap();
        assert_eq!(spec.key, "exp_checkout");
        assert_eq!(spec.control, "control");
        assert_eq!(
            spec.variants,
            [
                VariantSpec {
                    key: "control".into(),
                    weight: 1.0
                },
                VariantSpec {
                    key: "treatment".into(),
                    weight: 3.0
                }
            ]
        );
        assert_eq!(spec.start, "2026-01-01T00:00:00Z");
        assert_eq!(
            spec.end, "2026-01-08T12:00:00Z",
            "a running experiment ends at the look"
        );
        assert_eq!(
            (spec.primary.as_str(), spec.secondary.as_slice()),
            ("conversion", &["revenue".to_owned()][..])
        );
        assert_eq!(spec.guardrails, ["p95_latency"]);
        assert_eq!(
            (spec.alpha, spec.mde, spec.planned_units),
            (0.01, Some(0.02), Some(5000))
        );
        assert_eq!(spec.sequential, SequentialMethod::GroupSequential);
        // Settings the definition does not state are the documented defaults.
        assert_eq!(
            (spec.analysis, spec.multiple_testing, spec.cuped),
            (AnalysisMode::Itt, MultipleTesting::BenjaminiHochberg, None)
        );
        assert!(spec.segments.is_empty());
        assert_eq!((spec.min_duration_days, spec.bayesian), (7, false));
        let mut planned = definition(None);
        planned.min_duration_days = 21;
        planned.bayesian = true;
        planned.analysis = AnalysisMode::PerProtocol;
        planned.multiple_testing = MultipleTesting::Holm;
        planned.cuped = Some(CupedSpec {
            pre_period_days: 14,
        });
        planned.segments = vec!["country".into()];
        let spec = AnalysisSpec::from_experiment(&planned, vec![], as_of).unwrap();
        assert_eq!(
            (spec.analysis, spec.multiple_testing, spec.cuped),
            (
                AnalysisMode::PerProtocol,
                MultipleTesting::Holm,
                Some(CupedSpec {
                    pre_period_days: 14
                })
            )
        );
        assert_eq!(spec.segments, ["country"]);
        assert_eq!((spec.min_duration_days, spec.bayesian), (21, true));
        let ended =
            AnalysisSpec::from_experiment(&definition(Some("2026-01-05T00:00:00Z")), vec![], as_of)
                .unwrap();
        assert_eq!(ended.end, "2026-01-05T00:00:00Z");
    }

    #[test]
    fn a_stored_experiment_s_guardrails_resolve_to_the_metrics_they_watch() {
        let registry = MetricRegistry::from_str_named(
            r#"{"metrics": [
              {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
              {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}},
              {"key": "p95_latency", "type": "quantile", "quantile": 0.95, "filter": {"type": "page_load"}}]}"#,
            Path::new("registry.json"),
        )
        .unwrap();
        let guard: strata_model::GuardrailDef = serde_json::from_value(serde_json::json!({
            "key": "latency_guard", "metric": "p95_latency", "threshold": 50.0,
            "direction": "increase_is_bad", "window_minutes": 15, "auto_action": "kill"
        }))
        .unwrap();
        let as_of = parse_time("2026-01-08T12:00:00Z").unwrap();
        let spec = AnalysisSpec::pre_registered(
            &definition(None),
            &registry,
            std::slice::from_ref(&guard),
            as_of,
        )
        .unwrap();
        assert_eq!(spec.spec.guardrails, ["p95_latency"]);
        // A metric watched twice, or also primary or secondary, is analysed
        // once, in its first role.
        let mut twice = definition(None);
        twice.guardrails = vec![
            "latency_guard".into(),
            "conversion".into(),
            "p95_latency".into(),
            "revenue".into(),
        ];
        let spec =
            AnalysisSpec::pre_registered(&twice, &registry, std::slice::from_ref(&guard), as_of)
                .unwrap();
        assert_eq!(
            (
                spec.spec.primary.as_str(),
                spec.spec.secondary.as_slice(),
                spec.spec.guardrails.as_slice()
            ),
            (
                "conversion",
                &["revenue".to_string()][..],
                &["p95_latency".to_string()][..]
            )
        );
        // A name that is neither a definition nor a metric is refused where it stands.
        let e = AnalysisSpec::pre_registered(&definition(None), &registry, &[], as_of).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("experiment exp_checkout: field `guardrails[0]`"),
            "{msg}"
        );
    }

    #[test]
    fn an_experiment_that_never_started_cannot_be_analysed() {
        let mut d = definition(None);
        d.started_at = None;
        d.status = "draft".into();
        let e = AnalysisSpec::from_experiment(&d, vec![], Utc::now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "experiment exp_checkout: field `started_at`: started_at is unset: experiment \"exp_checkout\" has not started (status draft), there is nothing to analyse"
        );
    }
}
