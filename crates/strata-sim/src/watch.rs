//! Watching the demo's scenarios reach their outcomes, as a user would:
//! through the API (the experiment, its health — the latest look's checks
//! and decision — and its guardrail history).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::scenario::Scenario;

/// What the API shows of one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// `GET /api/v1/experiments/{key}`.
    pub experiment: Value,
    /// `GET /api/v1/experiments/{key}/health` (null before the first look).
    pub health: Value,
    /// `GET /api/v1/experiments/{key}/results` (null before the first look).
    pub results: Value,
    /// `GET /api/v1/experiments/{key}/guardrails`.
    pub guardrails: Value,
}

impl Seen {
    fn status(&self) -> &str {
        self.experiment["status"].as_str().unwrap_or_default()
    }

    fn verdict(&self) -> &str {
        self.health["decision"]["verdict"]
            .as_str()
            .unwrap_or("none")
    }

    /// The status of health check `name` in the latest look.
    fn check(&self, name: &str) -> Option<&str> {
        self.health["health"]
            .as_array()?
            .iter()
            .find(|h| h["check"] == name)?["status"]
            .as_str()
    }

    fn warns(&self, name: &str) -> bool {
        matches!(self.check(name), Some("warn" | "fail"))
    }

    /// Whether the primary metric's effect in the latest look is
    /// significant: under its sequential test, the one judgement whose
    /// error rate holds however often one looks (secondary metrics are
    /// tested at each look as if it were the last).
    fn primary_significant(&self) -> bool {
        self.results["results"]["metrics"]
            .as_array()
            .is_some_and(|ms| {
                ms.iter().filter(|m| m["role"] == "primary").any(|m| {
                    m["effects"]
                        .as_array()
                        .is_some_and(|es| es.iter().any(|e| e["significant"] == true))
                })
            })
    }

    /// One line of what it shows.
    pub fn summary(&self) -> String {
        format!(
            "status {}, verdict {}, ramp {} %",
            self.status(),
            self.verdict(),
            self.experiment["ramp_percent"]
        )
    }
}

/// Where a scenario stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its outcome shows.
    Reached(String),
    /// Not yet.
    Waiting,
    /// It shows what it must never show.
    Wrong(String),
}

/// Where `scenario` stands, from what the API shows of it.
pub fn standing(scenario: &Scenario, seen: &Seen) -> Standing {
    let reached = match scenario.key {
        "demo_winner" => seen.verdict() == "ship",
        "demo_guardrail" => {
            let breached = seen.guardrails["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["outcome"] == "breach"));
            seen.status() == "killed" && breached
        }
        "demo_srm" => {
            seen.status() == "paused"
                && seen.check("srm") == Some("fail")
                && seen.verdict() == "unhealthy"
        }
        "demo_simpson" => seen.warns("simpsons_paradox"),
        "demo_novelty" => seen.warns("novelty"),
        "demo_ramp" => seen.experiment["ramp_percent"]
            .as_f64()
            .is_some_and(|p| p >= 50.0),
        "demo_aa" => {
            if matches!(seen.status(), "killed" | "paused") || seen.primary_significant() {
                return Standing::Wrong(seen.summary());
            }
            // Judged once it has run its minimum duration.
            seen.check("minimum_duration") == Some("ok")
        }
        other => return Standing::Wrong(format!("no outcome is known for {other}")),
    };
    if reached {
        Standing::Reached(seen.summary())
    } else {
        Standing::Waiting
    }
}

/// Reads what the API shows of experiment `key` at `base` with `token`.
pub async fn see(http: &reqwest::Client, base: &str, token: &str, key: &str) -> Seen {
    let get = |path: String| async move {
        let url = format!(
            "{}/api/v1/experiments/{key}{path}",
            base.trim_end_matches('/')
        );
        match http
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        }
    };
    Seen {
        experiment: get(String::new()).await,
        health: get("/health".into()).await,
        results: get("/results".into()).await,
        guardrails: get("/guardrails".into()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::by_key;
    use serde_json::json;

    fn seen(status: &str, verdict: &str, checks: &[(&str, &str)]) -> Seen {
        let health: Vec<Value> = checks
            .iter()
            .map(|(c, s)| json!({"check": c, "status": s}))
            .collect();
        Seen {
            experiment: json!({"status": status, "ramp_percent": 100.0}),
            health: json!({"health": health, "decision": {"verdict": verdict}}),
            results: Value::Null,
            guardrails: json!({"history": []}),
        }
    }

    #[test]
    fn each_outcome_reads_off_the_api() {
        let s = |k| by_key(k).unwrap();
        assert!(matches!(
            standing(&s("demo_winner"), &seen("running", "ship", &[])),
            Standing::Reached(_)
        ));
        assert_eq!(
            standing(&s("demo_winner"), &seen("running", "keep_running", &[])),
            Standing::Waiting
        );
        let srm = seen("paused", "unhealthy", &[("srm", "fail")]);
        assert!(matches!(
            standing(&s("demo_srm"), &srm),
            Standing::Reached(_)
        ));
        let srm_running = seen("running", "unhealthy", &[("srm", "fail")]);
        assert_eq!(standing(&s("demo_srm"), &srm_running), Standing::Waiting);
        let mut killed = seen("killed", "none", &[]);
        assert_eq!(standing(&s("demo_guardrail"), &killed), Standing::Waiting);
        killed.guardrails = json!({"history": [{"outcome": "breach"}]});
        assert!(matches!(
            standing(&s("demo_guardrail"), &killed),
            Standing::Reached(_)
        ));
        for (k, check) in [
            ("demo_simpson", "simpsons_paradox"),
            ("demo_novelty", "novelty"),
        ] {
            assert!(matches!(
                standing(&s(k), &seen("running", "keep_running", &[(check, "warn")])),
                Standing::Reached(_)
            ));
            assert_eq!(
                standing(&s(k), &seen("running", "keep_running", &[(check, "ok")])),
                Standing::Waiting
            );
        }
        let mut ramp = seen("running", "keep_running", &[]);
        ramp.experiment["ramp_percent"] = json!(25.0);
        assert_eq!(standing(&s("demo_ramp"), &ramp), Standing::Waiting);
        ramp.experiment["ramp_percent"] = json!(50.0);
        assert!(matches!(
            standing(&s("demo_ramp"), &ramp),
            Standing::Reached(_)
        ));
    }

    #[test]
    fn an_a_a_test_is_judged_after_its_minimum_duration_and_never_killed() {
        let aa = by_key("demo_aa").unwrap();
        let young = seen("running", "keep_running", &[("minimum_duration", "warn")]);
        assert_eq!(standing(&aa, &young), Standing::Waiting);
        let mut done = seen("running", "keep_running", &[("minimum_duration", "ok")]);
        assert!(matches!(standing(&aa, &done), Standing::Reached(_)));
        done.results = json!({"results": {"metrics": [
            {"role": "secondary", "effects": [{"significant": true}]}]}});
        assert!(matches!(standing(&aa, &done), Standing::Reached(_)));
        done.results["results"]["metrics"][0]["role"] = json!("primary");
        assert!(matches!(standing(&aa, &done), Standing::Wrong(_)));
        let killed = seen("killed", "none", &[]);
        assert!(matches!(standing(&aa, &killed), Standing::Wrong(_)));
    }
}
