//! Guardrail definitions: a metric watched while an experiment runs, with a
//! threshold and what happens when it is breached.

use serde::{Deserialize, Serialize};

use crate::check::check_key;
use crate::error::ModelError;

/// The largest absolute threshold; beyond it a threshold is a typo, and the
/// bound keeps comparisons clear of float overflow.
const THRESHOLD_MAX: f64 = 1e15;

/// The longest evaluation window: 90 days, in minutes.
pub const WINDOW_MAX_MINUTES: u32 = 60 * 24 * 90;

/// Which direction of change a guardrail watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailDirection {
    /// An increase beyond the threshold is a breach.
    IncreaseIsBad,
    /// A decrease beyond the threshold is a breach.
    DecreaseIsBad,
}

/// What happens on a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoAction {
    /// Kill the experiment: every unit is served the default.
    Kill,
    /// Pause the experiment: no new unit enters, those in keep their variant.
    Pause,
    /// Alert the owners.
    Alert,
}

impl AutoAction {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoAction::Kill => "kill",
            AutoAction::Pause => "pause",
            AutoAction::Alert => "alert",
        }
    }
}

/// Which experiments a guardrail definition watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// The experiments that list it in their `guardrails`.
    #[default]
    Listed,
    /// Every running experiment, listed or not (an organisation-wide
    /// guardrail; definitions are admins').
    All,
}

/// The default of [`GuardrailDef::min_age_minutes`]: two hours, the
/// design's protection of a launch whose first events are still in flight.
pub const DEFAULT_MIN_AGE_MINUTES: u32 = 120;

fn default_min_age_minutes() -> u32 {
    DEFAULT_MIN_AGE_MINUTES
}

/// A guardrail definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailDef {
    /// Unique key.
    pub key: String,
    /// The metric watched (a key of the metric registry).
    pub metric: String,
    /// Breach threshold (absolute, or relative when `relative`).
    pub threshold: f64,
    /// Whether `threshold` is a relative change.
    #[serde(default)]
    pub relative: bool,
    /// Which direction is bad.
    pub direction: GuardrailDirection,
    /// Evaluation window, in minutes.
    pub window_minutes: u32,
    /// Minimum samples before it can fire.
    #[serde(default)]
    pub min_samples: u64,
    /// Minimum time since the experiment's activation before it can fire,
    /// in minutes (default [`DEFAULT_MIN_AGE_MINUTES`]).
    #[serde(default = "default_min_age_minutes")]
    pub min_age_minutes: u32,
    /// `kill`, `pause` or `alert`.
    pub auto_action: AutoAction,
    /// Which experiments it watches (default: those listing it).
    #[serde(default)]
    pub applies_to: AppliesTo,
    /// Whether its kill or pause acts on an experiment that requires
    /// approval too (otherwise a breach there alerts and waits for a
    /// person to confirm or dismiss it).
    #[serde(default)]
    pub force: bool,
}

impl GuardrailDef {
    /// Checks the fields. Whether `metric` is in the registry is for the
    /// holder of the registry to check.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_key("key", &self.key)?;
        check_key("metric", &self.metric)?;
        if !self.threshold.is_finite() || self.threshold.abs() > THRESHOLD_MAX {
            return Err(ModelError::invalid("threshold", "must be a finite number"));
        }
        // The threshold is the harm tolerated, in the bad direction: a
        // negative one would call an improvement a breach.
        if self.threshold < 0.0 {
            return Err(ModelError::invalid(
                "threshold",
                "must not be negative: it is the harm tolerated, in the direction `direction` names",
            ));
        }
        if self.relative
            && self.direction == GuardrailDirection::DecreaseIsBad
            && self.threshold >= 1.0
        {
            return Err(ModelError::invalid(
                "threshold",
                "must be below 1 for a relative decrease: a positive metric cannot fall by 100 % or more",
            ));
        }
        if self.window_minutes == 0 || self.window_minutes > WINDOW_MAX_MINUTES {
            return Err(ModelError::invalid(
                "window_minutes",
                format!("must be between 1 and {WINDOW_MAX_MINUTES}"),
            ));
        }
        Ok(())
    }
}

/// An entry of an experiment's `guardrails` list with the metric it watches.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResolvedGuardrail {
    /// The name as the experiment lists it.
    pub name: String,
    /// The key of the metric watched: the definition's `metric`, or the
    /// name itself when it is a metric key.
    pub metric: String,
    /// The guardrail definition named, when the name is one.
    pub definition: Option<GuardrailDef>,
}

/// Resolves an experiment's `guardrails` list, whose entries may name
/// guardrail definitions or metrics, to the metrics watched, so that the
/// analysis, which knows only metrics, reads one namespace.
///
/// A name that is both a guardrail definition and a metric is refused as
/// ambiguous unless the definition watches that same metric; an unknown name
/// is refused. Fields are `guardrails[i]`.
pub fn resolve(
    names: &[String],
    guardrails: &[GuardrailDef],
    metrics: &[&str],
) -> Result<Vec<ResolvedGuardrail>, ModelError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let field = format!("guardrails[{i}]");
            let def = guardrails.iter().find(|g| &g.key == name);
            let is_metric = metrics.contains(&name.as_str());
            match def {
                Some(g) if is_metric && g.metric != *name => Err(ModelError::invalid(
                    field,
                    format!(
                        "{name:?} is ambiguous: it is a guardrail definition watching metric {:?} and also a metric key",
                        g.metric
                    ),
                )),
                Some(g) => Ok(ResolvedGuardrail {
                    name: name.clone(),
                    metric: g.metric.clone(),
                    definition: Some(g.clone()),
                }),
                None if is_metric => Ok(ResolvedGuardrail {
                    name: name.clone(),
                    metric: name.clone(),
                    definition: None,
                }),
                None => Err(ModelError::invalid(
                    field,
                    format!("{name:?} is neither a guardrail definition nor a registered metric"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> GuardrailDef {
        GuardrailDef {
            key: "latency_guard".into(),
            metric: "page_load_p95".into(),
            threshold: 50.0,
            relative: false,
            direction: GuardrailDirection::IncreaseIsBad,
            window_minutes: 15,
            min_samples: 10_000,
            min_age_minutes: 120,
            auto_action: AutoAction::Kill,
            applies_to: AppliesTo::Listed,
            force: false,
        }
    }

    fn reject(g: GuardrailDef) -> (String, String) {
        let e = g.validate().unwrap_err();
        (e.field().to_owned(), e.to_string())
    }

    #[test]
    fn valid_definition_passes() {
        assert_eq!(def().validate(), Ok(()));
        let edge = GuardrailDef {
            threshold: 1e15,
            window_minutes: WINDOW_MAX_MINUTES,
            ..def()
        };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn keys_are_checked() {
        let (f, m) = reject(GuardrailDef {
            key: "".into(),
            ..def()
        });
        assert_eq!((f.as_str(), m.as_str()), ("key", "key must not be empty"));
        let (f, _) = reject(GuardrailDef {
            metric: "a b".into(),
            ..def()
        });
        assert_eq!(f, "metric");
    }

    #[test]
    fn threshold_must_be_finite_and_bounded() {
        for t in [f64::NAN, f64::INFINITY, 2e15] {
            let (f, m) = reject(GuardrailDef {
                threshold: t,
                ..def()
            });
            assert_eq!(
                (f.as_str(), m.as_str()),
                ("threshold", "threshold must be a finite number")
            );
        }
    }

    #[test]
    fn threshold_is_a_tolerated_harm() {
        let (f, m) = reject(GuardrailDef {
            threshold: -0.5,
            ..def()
        });
        assert_eq!(f, "threshold");
        assert!(m.contains("must not be negative"), "{m}");
        let relative_drop = GuardrailDef {
            relative: true,
            direction: GuardrailDirection::DecreaseIsBad,
            threshold: 1.0,
            ..def()
        };
        let (f, m) = reject(relative_drop.clone());
        assert_eq!(f, "threshold");
        assert!(m.contains("below 1"), "{m}");
        assert_eq!(
            GuardrailDef {
                threshold: 0.99,
                ..relative_drop
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn window_is_bounded() {
        for w in [0, WINDOW_MAX_MINUTES + 1] {
            let (f, m) = reject(GuardrailDef {
                window_minutes: w,
                ..def()
            });
            assert_eq!(
                (f.as_str(), m.as_str()),
                (
                    "window_minutes",
                    "window_minutes must be between 1 and 129600"
                )
            );
        }
    }

    #[test]
    fn json_round_trip() {
        let text = r#"{"key":"latency_guard","metric":"page_load_p95","threshold":50.0,"relative":false,"direction":"increase_is_bad","window_minutes":15,"min_samples":10000,"min_age_minutes":120,"auto_action":"kill","applies_to":"listed","force":false}"#;
        let g: GuardrailDef = serde_json::from_str(text).unwrap();
        assert_eq!(g, def());
        assert_eq!(serde_json::to_string(&g).unwrap(), text);
        for (d, s) in [
            (GuardrailDirection::IncreaseIsBad, "\"increase_is_bad\""),
            (GuardrailDirection::DecreaseIsBad, "\"decrease_is_bad\""),
        ] {
            assert_eq!(serde_json::to_string(&d).unwrap(), s);
            assert_eq!(serde_json::from_str::<GuardrailDirection>(s).unwrap(), d);
        }
        for a in [AutoAction::Kill, AutoAction::Pause, AutoAction::Alert] {
            let s = format!("\"{}\"", a.as_str());
            assert_eq!(serde_json::to_string(&a).unwrap(), s);
            assert_eq!(serde_json::from_str::<AutoAction>(&s).unwrap(), a);
        }
        for (a, s) in [
            (AppliesTo::Listed, "\"listed\""),
            (AppliesTo::All, "\"all\""),
        ] {
            assert_eq!(serde_json::to_string(&a).unwrap(), s);
            assert_eq!(serde_json::from_str::<AppliesTo>(s).unwrap(), a);
        }
        // Defaults of the optional fields, and unknown fields rejected.
        let short: GuardrailDef = serde_json::from_str(
            r#"{"key":"g","metric":"m","threshold":1,"direction":"decrease_is_bad","window_minutes":5,"auto_action":"alert"}"#,
        )
        .unwrap();
        assert_eq!(
            (short.relative, short.min_samples, short.min_age_minutes),
            (false, 0, DEFAULT_MIN_AGE_MINUTES)
        );
        assert_eq!((short.applies_to, short.force), (AppliesTo::Listed, false));
        assert!(serde_json::from_str::<GuardrailDef>(
            r#"{"key":"g","metric":"m","threshold":1,"direction":"decrease_is_bad","window_minutes":5,"auto_action":"alert","x":1}"#
        )
        .is_err());
    }

    #[test]
    fn names_resolve_to_metrics() {
        let defs = [def()];
        let names: Vec<String> = ["latency_guard", "conversion"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = resolve(&names, &defs, &["page_load_p95", "conversion"]).unwrap();
        assert_eq!(
            r.iter().map(|g| g.metric.as_str()).collect::<Vec<_>>(),
            ["page_load_p95", "conversion"]
        );
        assert_eq!(r[0].definition.as_ref(), Some(&defs[0]));
        assert_eq!(r[1].definition, None);
        // A definition named after the metric it watches is not ambiguous.
        let same = GuardrailDef {
            key: "page_load_p95".into(),
            ..def()
        };
        let r = resolve(&["page_load_p95".into()], &[same], &["page_load_p95"]).unwrap();
        assert_eq!(r[0].metric, "page_load_p95");
    }

    #[test]
    fn unknown_and_ambiguous_names_are_refused() {
        let names: Vec<String> = vec!["conversion".into(), "nope".into()];
        let e = resolve(&names, &[def()], &["conversion"]).unwrap_err();
        assert_eq!(e.field(), "guardrails[1]");
        assert_eq!(
            e.to_string(),
            "guardrails[1] \"nope\" is neither a guardrail definition nor a registered metric"
        );
        let names: Vec<String> = vec!["conversion".into(), "latency_guard".into()];
        let e = resolve(&names, &[def()], &["conversion", "latency_guard"]).unwrap_err();
        assert_eq!(e.field(), "guardrails[1]");
        assert!(e.to_string().contains("ambiguous"), "{e}");
    }
}
