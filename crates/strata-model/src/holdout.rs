//! The global holdout's impact: what everything shipped adds up to.
//!
//! The holdout (a small share of units that sees no treatment and no
//! shipped winner) is compared with every other unit exposed over the same
//! **period** — from the holdout's salt or size being set to its next
//! change, since a new salt or size moves units in or out of it. Each
//! period has looks, computed by the scheduled analysis like any
//! experiment's (the holdout is the control, the rest the treatment, so an
//! effect is what the shipped changes added), with a check that the
//! holdout is not contaminated and the winners concluded during the period
//! beside the measured lift (`docs/statistics.md`, "Global holdout").
//!
//! The analysis engine computes [`HoldoutLook::results`] and
//! [`HoldoutLook::contamination`]; the control plane stores the periods,
//! adds [`HoldoutLook::attribution`] from the experiments it keeps, and
//! serves them (`GET /api/v1/holdout/impact`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::results::Results;

/// The name of the holdout's contamination health check.
pub const CONTAMINATION_CHECK: &str = "holdout_contamination";

/// One period of the global holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutPeriod {
    /// Its number, from 1.
    pub period: u64,
    /// The holdout's salt during the period.
    pub salt: String,
    /// The share of units held out, percent.
    pub percent: f64,
    /// When the salt or size was set (RFC 3339).
    pub started_at: String,
    /// When the next change ended it; none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Who ended it (an actor, `system:holdout` for a scheduled rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// The latest look; after the period ended, its final look once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look: Option<HoldoutLook>,
}

impl HoldoutPeriod {
    /// Whether the period has ended and still waits for its final look.
    pub fn awaits_final_look(&self) -> bool {
        self.ended_at.is_some() && !self.look.as_ref().is_some_and(|l| l.final_look)
    }
}

/// A look at one period of the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutLook {
    /// Data up to this time (RFC 3339).
    pub as_of: String,
    /// The look of an ended period over all of it; it is not taken again.
    pub final_look: bool,
    /// The comparison on the key metrics, as any experiment's results
    /// (experiment `$holdout`; control `holdout`, treatment `rest`): the
    /// effects are what everything shipped adds up to. Its health checks
    /// include [`CONTAMINATION_CHECK`].
    pub results: Results,
    /// Held-out units exposed to a treatment.
    pub contamination: Contamination,
    /// The winners concluded during the period, beside the measured lift.
    #[serde(default)]
    pub attribution: Attribution,
}

/// Held-out units that saw a treatment of an experiment respecting the
/// holdout during the period — which the holdout promises never happens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contamination {
    /// Units whose holdout exposure in the period says `holdout`.
    pub holdout_units: u64,
    /// Those of them exposed to a treatment variant in the period.
    pub contaminated_units: u64,
    /// Per experiment and variant, the held-out units exposed to it.
    pub exposures: Vec<ContaminatedVariant>,
}

/// Held-out units exposed to one treatment variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContaminatedVariant {
    /// The experiment.
    pub experiment: String,
    /// Its treatment variant.
    pub variant: String,
    /// Held-out units exposed to it.
    pub units: u64,
}

/// The winners concluded during a period and, per key metric, the sum of
/// the lifts they claimed beside the holdout's measured lift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Experiments respecting the holdout concluded with a winner during
    /// the period, by conclusion time.
    pub winners: Vec<ShippedWinner>,
    /// Per key metric, in the key metrics' order.
    pub metrics: Vec<MetricImpact>,
}

/// An experiment concluded with a winner, with the lifts its own latest
/// look measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippedWinner {
    /// The experiment.
    pub experiment: String,
    /// The variant it shipped.
    pub winner: String,
    /// When it ended (RFC 3339).
    pub concluded_at: String,
    /// The look the lifts are read from; none when it has no look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Per key metric that look measured, the winner's lift over control.
    pub lifts: BTreeMap<String, Lift>,
    /// Whether `lifts` were left out for a reader who may not read the
    /// experiment's results (its team's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
}

/// A relative lift with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lift {
    /// `treatment / control − 1`.
    #[serde(default)]
    pub relative: Option<f64>,
    /// Its confidence interval.
    #[serde(default)]
    pub relative_ci: Option<[f64; 2]>,
    /// Whether the effect was significant.
    pub significant: bool,
}

/// One key metric: what the winners claimed and what the holdout measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricImpact {
    /// The metric.
    pub metric: String,
    /// The holdout's measured lift of everyone else over the holdout.
    #[serde(default)]
    pub measured: Option<Lift>,
    /// The sum of the winners' measured relative lifts on the metric.
    pub claimed_sum: f64,
    /// How many winners measured it.
    pub claimed_by: u64,
}

impl Lift {
    /// The lift of `variant` on `metric` in `results`, if measured.
    pub fn of(results: &Results, metric: &str, variant: &str) -> Option<Lift> {
        let m = results.metrics.iter().find(|m| m.metric == metric)?;
        let e = m.effects.iter().find(|e| e.variant == variant)?;
        Some(Lift {
            relative: e.relative,
            relative_ci: e.relative_ci,
            significant: e.significant,
        })
    }
}

impl Attribution {
    /// The winners beside the holdout look's `results` on `key_metrics`:
    /// each metric's measured lift (of variant `rest`, everyone else, over
    /// the holdout) and the sum of the winners' lifts on it.
    pub fn new(
        winners: Vec<ShippedWinner>,
        results: &Results,
        rest: &str,
        key_metrics: &[String],
    ) -> Self {
        let metrics = key_metrics
            .iter()
            .map(|k| {
                let claimed: Vec<f64> = winners
                    .iter()
                    .filter_map(|w| w.lifts.get(k).and_then(|l| l.relative))
                    .collect();
                MetricImpact {
                    metric: k.clone(),
                    measured: Lift::of(results, k, rest),
                    claimed_sum: claimed.iter().sum(),
                    claimed_by: claimed.len() as u64,
                }
            })
            .collect();
        Self { winners, metrics }
    }
}

/// The settings of the holdout's analysis: the organisation's key metrics
/// (the registry's `key_metrics`), those every holdout look measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMetrics {
    /// Metric keys of the registry, the first the primary.
    pub metrics: Vec<String>,
}

impl KeyMetrics {
    /// Checks the list against the registry's metric keys: at least one,
    /// each known, none twice.
    pub fn validate(&self, known: &[&str]) -> Result<(), crate::ModelError> {
        if self.metrics.is_empty() {
            return Err(crate::ModelError::invalid(
                "metrics",
                "must name at least one metric of the registry",
            ));
        }
        for (i, k) in self.metrics.iter().enumerate() {
            let field = format!("metrics[{i}]");
            if !known.contains(&k.as_str()) {
                return Err(crate::ModelError::invalid(
                    field,
                    format!("names unknown metric {k:?} (not in the registry)"),
                ));
            }
            if self.metrics[..i].contains(k) {
                return Err(crate::ModelError::DuplicateKey {
                    field,
                    key: k.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results_with(lifts: &[(&str, &str, f64)]) -> Results {
        let metrics: Vec<serde_json::Value> = lifts
            .iter()
            .map(|(metric, variant, rel)| {
                serde_json::json!({
                    "metric": metric, "role": "primary", "type": "binomial",
                    "direction": "increase_is_good", "variants": {},
                    "effects": [{"variant": variant, "control": "control",
                        "relative": rel, "relative_ci": [rel - 0.01, rel + 0.01],
                        "significant": true, "tier": "primary", "warnings": []}]
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "experiment": "x", "as_of": "2026-01-02T00:00:00Z",
            "start": "2026-01-01T00:00:00Z", "analysis": "itt", "units": {},
            "srm": {"chi2": 0.0, "df": 1, "p_value": 1.0, "flagged": false,
                "observed": {}, "expected": {}},
            "metrics": metrics, "segments": {}, "novelty": null, "warnings": []
        }))
        .unwrap()
    }

    fn winner(key: &str, lifts: &[(&str, f64)]) -> ShippedWinner {
        ShippedWinner {
            experiment: key.into(),
            winner: "treatment".into(),
            concluded_at: "2026-01-01T00:00:00Z".into(),
            seq: Some(1),
            lifts: lifts
                .iter()
                .map(|(m, r)| {
                    let l = Lift {
                        relative: Some(*r),
                        relative_ci: None,
                        significant: true,
                    };
                    ((*m).to_owned(), l)
                })
                .collect(),
            withheld: false,
        }
    }

    #[test]
    fn attribution_sums_the_winners_claims_beside_the_measured_lift() {
        let holdout = results_with(&[("conversion", "rest", 0.05)]);
        let winners = vec![
            winner("a", &[("conversion", 0.03), ("revenue", 0.10)]),
            winner("b", &[("conversion", 0.04)]),
            winner("c", &[]),
        ];
        let keys = vec!["conversion".to_owned(), "revenue".to_owned()];
        let a = Attribution::new(winners, &holdout, "rest", &keys);
        assert_eq!(a.metrics.len(), 2);
        let conv = &a.metrics[0];
        assert!((conv.claimed_sum - 0.07).abs() < 1e-12);
        assert_eq!(conv.claimed_by, 2);
        assert_eq!(conv.measured.unwrap().relative, Some(0.05));
        let rev = &a.metrics[1];
        assert_eq!((rev.claimed_sum, rev.claimed_by), (0.10, 1));
        assert!(
            rev.measured.is_none(),
            "the holdout look did not measure it"
        );
    }

    #[test]
    fn key_metrics_must_be_known_and_listed_once() {
        let known = ["conversion", "revenue"];
        let ok = KeyMetrics {
            metrics: vec!["conversion".into(), "revenue".into()],
        };
        assert!(ok.validate(&known).is_ok());
        let empty = KeyMetrics::default().validate(&known).unwrap_err();
        assert_eq!(empty.field(), "metrics");
        let unknown = KeyMetrics {
            metrics: vec!["conversion".into(), "clicks".into()],
        };
        let e = unknown.validate(&known).unwrap_err();
        assert_eq!(e.field(), "metrics[1]");
        assert!(
            e.to_string().contains("names unknown metric \"clicks\""),
            "{e}"
        );
        let twice = KeyMetrics {
            metrics: vec!["revenue".into(), "revenue".into()],
        };
        assert_eq!(twice.validate(&known).unwrap_err().field(), "metrics[1]");
    }

    #[test]
    fn a_period_awaits_its_final_look_once_ended() {
        let mut p = HoldoutPeriod {
            period: 1,
            salt: "H-1".into(),
            percent: 5.0,
            started_at: "2026-01-01T00:00:00Z".into(),
            ended_at: None,
            ended_by: None,
            look: None,
        };
        assert!(!p.awaits_final_look());
        p.ended_at = Some("2026-02-01T00:00:00Z".into());
        assert!(p.awaits_final_look());
    }
}
