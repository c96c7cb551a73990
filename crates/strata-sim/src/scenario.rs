//! The demo's scenarios: each an experiment (its definition as the API
//! takes it), the effect planted in its treatment and, for some, a planted
//! logging bug — plus the metric registry and the organisation-wide
//! guardrails they are measured with.
//!
//! Keys are fixed (`demo_winner`, …) so that scripts and tests can find
//! them. Every scenario has a control and one treatment; the outcome each
//! should produce is in its [`Scenario::expect`].

use serde_json::{json, Value};

use crate::behaviour::Effect;
use crate::population::Plan;

/// A planted bug in how a variant's exposures are logged: the affected
/// users see their variant (the app reads assignments without logging),
/// but no exposure reaches the collector, so the analysis never counts
/// them — the classic cause of a sample ratio mismatch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoggingBug {
    /// Every exposure is logged.
    None,
    /// The treatment's exposures are lost for this share of its users.
    Treatment {
        /// Share of the treatment's users, 0 to 1.
        share: f64,
    },
    /// Exposures are lost for `share` of the treatment's users on plan
    /// `treatment_loses` and of the control's users on the other plan:
    /// the variants stay the same size (no mismatch), but their plan mix
    /// differs.
    ByPlan {
        /// The plan whose treatment exposures are lost.
        treatment_loses: Plan,
        /// Share of the affected users, 0 to 1.
        share: f64,
    },
}

/// One demo scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The experiment's key.
    pub key: &'static str,
    /// What it shows, one line.
    pub story: &'static str,
    /// The outcome the platform should reach.
    pub expect: &'static str,
    /// The treatment's effect (the control has none).
    pub treatment: Effect,
    /// How its exposures are logged.
    pub logging: LoggingBug,
}

impl Scenario {
    /// The experiment's definition: the body of `POST /api/v1/experiments`
    /// for team `team`, planned for a population of `users` (the share of
    /// them it reaches, all of whom visit over its minimum duration). Its
    /// salt comes from `seed`, so that the same seed splits the same users
    /// the same way every run. An A/A test comes out significant in about α
    /// of such worlds, which is what α means: in the default seed's world
    /// the A/A check's arms are balanced on plan and platform, and another
    /// seed may show the false positive a real A/A test sometimes does.
    pub fn definition(&self, team: &str, users: u32, seed: u64) -> Value {
        let reach = match self.key {
            "demo_winner" | "demo_simpson" | "demo_ramp" => 0.5,
            _ => 1.0,
        };
        let planned = ((f64::from(users) * reach) as u64).max(100);
        let mut d = json!({
            "key": self.key,
            "name": self.story,
            "hypothesis": self.expect,
            "owner_team": team,
            "unit": "user_id",
            "variants": [{"key": "control", "weight": 1, "control": true},
                         {"key": "treatment", "weight": 1}],
            "primary_metric": "conversion",
            "secondary_metrics": ["revenue", "aov", "page_load_p95"],
            "mde": 0.1,
            "planned_units": planned,
            "sequential": "group_sequential",
            "segments": ["plan", "platform", "country"],
            "min_duration_days": 7,
            "srm_action": "pause",
            "requires_approval": false,
            "salt": format!("{}-{seed}", self.key)
        });
        match self.key {
            "demo_winner" | "demo_simpson" => {
                d["layer"] = json!("checkout");
                d["size"] = json!(500);
            }
            "demo_ramp" => {
                d["ramp_plan"] = json!([
                    {"percent": 1, "min_hours": 6},
                    {"percent": 5, "min_hours": 6},
                    {"percent": 25, "min_hours": 6},
                    {"percent": 50}
                ]);
            }
            _ => {}
        }
        d
    }

    /// The body of its `start` action.
    pub fn start(&self) -> Value {
        match self.key {
            "demo_ramp" => json!({"ramp_percent": 1}),
            _ => json!({"ramp_percent": 100}),
        }
    }
}

/// Every scenario, in the order the demo starts them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            key: "demo_winner",
            story: "One-page checkout",
            expect: "a clear lift in conversion: significant under the sequential test, ship once the minimum duration has passed",
            treatment: Effect {
                purchase: 1.3,
                ..Effect::NONE
            },
            logging: LoggingBug::None,
        },
        Scenario {
            key: "demo_guardrail",
            story: "Heavier product images",
            expect: "slower pages and more errors: killed by the guardrail monitor",
            treatment: Effect {
                load: 1.6,
                errors: 5.0,
                ..Effect::NONE
            },
            logging: LoggingBug::None,
        },
        Scenario {
            key: "demo_srm",
            story: "New recommendations widget",
            expect: "a logging bug loses some treatment exposures: sample ratio mismatch, unhealthy, paused",
            treatment: Effect::NONE,
            logging: LoggingBug::Treatment { share: 0.12 },
        },
        Scenario {
            key: "demo_simpson",
            story: "Express shipping banner",
            expect: "better for members and for guests, worse overall: Simpson's paradox flagged",
            treatment: Effect {
                purchase: 1.3,
                purchase_by_plan: [1.0, 1.5],
                ..Effect::NONE
            },
            logging: LoggingBug::ByPlan {
                treatment_loses: Plan::Member,
                share: 0.6,
            },
        },
        Scenario {
            key: "demo_novelty",
            story: "Animated deals carousel",
            expect: "a lift in units' first week that fades: novelty flagged",
            treatment: Effect {
                purchase: 1.8,
                fades_after_days: Some(7.0),
                ..Effect::NONE
            },
            logging: LoggingBug::None,
        },
        Scenario {
            key: "demo_aa",
            story: "A/A check",
            expect: "no difference: the primary metric never significant, never killed",
            treatment: Effect::NONE,
            logging: LoggingBug::None,
        },
        Scenario {
            key: "demo_ramp",
            story: "Search ranking v2",
            expect: "a safe change ramped 1 → 5 → 25 → 50 % as its checks pass",
            treatment: Effect::NONE,
            logging: LoggingBug::None,
        },
    ]
}

/// The scenario of `key`.
pub fn by_key(key: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.key == key)
}

/// The metric registry the scenarios are measured with (bodies of
/// `POST /api/v1/metrics`).
pub fn metrics() -> Vec<Value> {
    vec![
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"},
               "description": "Share of units with at least one purchase"}),
        json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"},
               "description": "Order value per unit"}),
        json!({"key": "aov", "type": "ratio",
               "numerator": {"type": "sum", "filter": {"type": "purchase"}},
               "denominator": {"type": "count", "filter": {"type": "purchase"}},
               "description": "Average order value"}),
        json!({"key": "page_load_p95", "type": "quantile", "quantile": 0.95,
               "filter": {"type": "page_load"}, "direction": "increase_is_bad",
               "description": "95th percentile of page-load time, ms"}),
        json!({"key": "page_load_ms", "type": "mean", "filter": {"type": "page_load"},
               "direction": "increase_is_bad",
               "description": "Mean page-load time per unit, ms"}),
        json!({"key": "error_rate", "type": "binomial", "filter": {"type": "error"},
               "direction": "increase_is_bad",
               "description": "Share of units that hit an error"}),
    ]
}

/// The organisation-wide guardrails (bodies of `POST /api/v1/guardrails`):
/// every running experiment is watched for slower pages and more errors.
pub fn guardrails() -> Vec<Value> {
    vec![
        json!({"key": "page_load_guard", "metric": "page_load_ms", "threshold": 0.1,
               "relative": true, "direction": "increase_is_bad", "window_minutes": 60,
               "min_samples": 100, "min_age_minutes": 60, "auto_action": "kill",
               "applies_to": "all"}),
        json!({"key": "error_guard", "metric": "error_rate", "threshold": 0.02,
               "direction": "increase_is_bad", "window_minutes": 60,
               "min_samples": 100, "min_age_minutes": 60, "auto_action": "kill",
               "applies_to": "all"}),
    ]
}

/// The layers the scenarios use (bodies of `POST /api/v1/layers`).
pub fn layers() -> Vec<Value> {
    vec![json!({"key": "checkout", "description": "Checkout experiments, mutually exclusive"})]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_fixed() {
        let keys: Vec<&str> = all().iter().map(|s| s.key).collect();
        assert_eq!(
            keys,
            [
                "demo_winner",
                "demo_guardrail",
                "demo_srm",
                "demo_simpson",
                "demo_novelty",
                "demo_aa",
                "demo_ramp"
            ]
        );
        assert_eq!(
            by_key("demo_srm").unwrap().logging,
            LoggingBug::Treatment { share: 0.12 }
        );
        assert!(by_key("nope").is_none());
    }

    #[test]
    fn definitions_name_only_registered_metrics() {
        let registered: Vec<String> = metrics()
            .iter()
            .map(|m| m["key"].as_str().unwrap().to_owned())
            .collect();
        for s in all() {
            let d = s.definition("growth", 1000, 3);
            assert_eq!(d["salt"], format!("{}-3", s.key));
            assert_eq!(d["key"], s.key);
            assert_eq!(d["owner_team"], "growth");
            let mut named = vec![d["primary_metric"].as_str().unwrap().to_owned()];
            for m in d["secondary_metrics"].as_array().unwrap() {
                named.push(m.as_str().unwrap().to_owned());
            }
            for m in named {
                assert!(registered.contains(&m), "{}: {m}", s.key);
            }
        }
        for g in guardrails() {
            assert!(registered
                .iter()
                .any(|m| m == g["metric"].as_str().unwrap()));
        }
        assert_eq!(by_key("demo_ramp").unwrap().start()["ramp_percent"], 1);
    }
}
