//! The decision of a look: what its numbers support doing, and why.
//!
//! In order of precedence:
//! 1. `unhealthy` — a health check failed: the numbers are not to be
//!    trusted, whatever they say;
//! 2. `roll_back` — the primary metric or a guardrail metric got
//!    significantly worse in a treatment;
//! 3. `ship` — the primary metric improved significantly (its sequential
//!    decision, when it has one), no guardrail got significantly worse,
//!    every health check is `ok` and the minimum duration is reached;
//! 4. `keep_running` — otherwise, with the days left until the planned
//!    units (from the pre-registered planned units, else from the MDE and
//!    the control's observed variance) at the observed daily traffic, and
//!    at least until the minimum duration.
//!
//! A significant improvement with a health warning is `keep_running`: the
//! warning says what to look at before anyone ships.

use strata_model::results::{Decision, HealthStatus, MetricResult, Results, Verdict};
use strata_stats::power::{sample_size, Baseline, Mde};

use crate::health::LookFacts;

/// Power used to turn an MDE into planned units when none were planned.
pub const DEFAULT_POWER: f64 = 0.8;

/// Whether `delta` moves `m` in its good direction.
fn improves(m: &MetricResult, delta: f64) -> bool {
    if m.direction == "increase_is_bad" {
        delta < 0.0
    } else {
        delta > 0.0
    }
}

fn describe(delta: f64, relative: Option<f64>) -> String {
    match relative {
        Some(r) => format!("{:+.2} % ({delta:+.4})", 100.0 * r),
        None => format!("{delta:+.4}"),
    }
}

/// Units the experiment needs in all: its planned units, else enough to
/// detect its MDE on the primary metric with [`DEFAULT_POWER`].
fn needed_units(r: &Results, f: &LookFacts) -> Option<u64> {
    if let Some(p) = f.planned_units {
        return Some(p);
    }
    let mde = f.mde?;
    let primary = r.metrics.iter().find(|m| m.role == "primary")?;
    let control = primary.effects.first().map(|e| e.control.as_str())?;
    let c = primary.variants.get(control)?;
    let mean = c.mean?;
    let baseline = if primary.kind == "binomial" {
        Baseline::Rate { rate: mean }
    } else {
        Baseline::Mean {
            mean,
            variance: c.variance?,
        }
    };
    let n = sample_size(baseline, Mde::Relative(mde), f.alpha, DEFAULT_POWER).ok()?;
    Some(n.per_variant.saturating_mul(r.units.len() as u64))
}

/// Days left until the needed units and the minimum duration, at the
/// observed daily traffic.
fn days_left(r: &Results, f: &LookFacts) -> Option<f64> {
    let units: u64 = r.units.values().sum();
    let for_duration = (f64::from(f.min_duration_days) - f.elapsed_days).max(0.0);
    let for_units = needed_units(r, f).and_then(|need| {
        if units >= need {
            Some(0.0)
        } else if units > 0 && f.elapsed_days > 0.0 {
            let per_day = units as f64 / f.elapsed_days;
            Some((need - units) as f64 / per_day)
        } else {
            None
        }
    });
    match for_units {
        Some(d) => Some(d.max(for_duration)),
        None => (for_duration > 0.0).then_some(for_duration),
    }
}

/// The decision of a look whose health checks are already in `r.health`.
pub fn decide(r: &Results, f: &LookFacts) -> Decision {
    let failing: Vec<&str> = r
        .health
        .iter()
        .filter(|c| c.status == HealthStatus::Fail)
        .map(|c| c.message.as_str())
        .collect();
    let warning: Vec<&str> = r
        .health
        .iter()
        .filter(|c| c.status == HealthStatus::Warn)
        .map(|c| c.message.as_str())
        .collect();
    let mut harm: Vec<(String, String)> = Vec::new();
    let mut wins: Vec<(&str, f64, String)> = Vec::new();
    for m in &r.metrics {
        let watched = m.role == "primary" || m.role == "guardrail";
        for e in m.effects.iter().filter(|e| e.significant) {
            let Some(delta) = e.delta else { continue };
            if watched && !improves(m, delta) {
                harm.push((
                    e.variant.clone(),
                    format!(
                        "{} metric `{}` got significantly worse in {}: {}.",
                        if m.role == "primary" {
                            "The primary"
                        } else {
                            "Guardrail"
                        },
                        m.metric,
                        e.variant,
                        describe(delta, e.relative)
                    ),
                ));
            } else if m.role == "primary" && improves(m, delta) {
                // Rank winners by relative improvement in the good direction.
                let gain = e.relative.unwrap_or(delta).abs();
                wins.push((
                    e.variant.as_str(),
                    gain,
                    format!(
                        "The primary metric `{}` improved significantly in {}: {}.",
                        m.metric,
                        e.variant,
                        describe(delta, e.relative)
                    ),
                ));
            }
        }
    }

    if !failing.is_empty() {
        let mut reasons: Vec<String> = failing.iter().map(|s| (*s).to_owned()).collect();
        reasons.extend(harm.into_iter().map(|(_, why)| {
            format!("Also seen, but not to be trusted until the checks pass: {why}")
        }));
        return Decision {
            verdict: Verdict::Unhealthy,
            variant: None,
            reasons,
            days_left: None,
        };
    }
    if let Some((variant, _)) = harm.first() {
        return Decision {
            verdict: Verdict::RollBack,
            variant: Some(variant.clone()),
            reasons: harm.iter().map(|(_, why)| why.clone()).collect(),
            days_left: None,
        };
    }
    wins.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some((variant, _, why)) = wins.first() {
        if warning.is_empty() {
            return Decision {
                verdict: Verdict::Ship,
                variant: Some((*variant).to_owned()),
                reasons: vec![
                    why.clone(),
                    "No guardrail metric got significantly worse.".to_owned(),
                    format!(
                        "Every health check is ok and the experiment has run {:.1} days (minimum {}).",
                        f.elapsed_days, f.min_duration_days
                    ),
                ],
                days_left: None,
            };
        }
        let mut reasons = vec![format!("{why} Not shippable yet:")];
        reasons.extend(warning.iter().map(|s| (*s).to_owned()));
        return Decision {
            verdict: Verdict::KeepRunning,
            variant: None,
            reasons,
            days_left: days_left(r, f),
        };
    }

    let left = days_left(r, f);
    let units: u64 = r.units.values().sum();
    let mut reasons = vec![if f.sequential {
        "The primary metric has not crossed its sequential boundary: no significant effect yet."
            .to_owned()
    } else {
        "No significant effect on the primary metric yet.".to_owned()
    }];
    match (left, needed_units(r, f)) {
        (Some(d), Some(need)) if d == 0.0 && units >= need => reasons.push(format!(
            "The experiment has its {need} planned units without a significant effect: any effect is likely smaller than the one it was sized to detect; stopping and keeping the control is reasonable."
        )),
        (Some(d), Some(need)) => reasons.push(format!(
            "{units} of {need} needed units; about {d:.1} more days at the observed traffic."
        )),
        (Some(d), None) => reasons.push(format!(
            "At least {d:.1} more days to reach the minimum duration."
        )),
        (None, _) => reasons.push(
            "How long it needs cannot be estimated yet: no units or no planned sample size."
                .to_owned(),
        ),
    }
    reasons.extend(warning.iter().map(|s| (*s).to_owned()));
    Decision {
        verdict: Verdict::KeepRunning,
        variant: None,
        reasons,
        days_left: left,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use strata_model::results::{Effect, HealthCheck, Srm, VariantResult};

    fn effect(variant: &str, delta: f64, significant: bool) -> Effect {
        Effect {
            variant: variant.into(),
            control: "control".into(),
            delta: Some(delta),
            ci: None,
            relative: Some(delta / 10.0),
            relative_ci: None,
            p_value: Some(if significant { 0.001 } else { 0.4 }),
            adjusted_p_value: None,
            significant,
            tier: String::new(),
            cuped: None,
            unadjusted: None,
            sequential: None,
            bayesian: None,
            insufficient_data: None,
            warnings: vec![],
        }
    }

    fn metric(key: &str, role: &str, direction: &str, effects: Vec<Effect>) -> MetricResult {
        let v = VariantResult {
            n: 5000,
            mean: Some(10.0),
            variance: Some(25.0),
            cuped_mean: None,
            value: None,
            ci: None,
        };
        MetricResult {
            metric: key.into(),
            role: role.into(),
            kind: "mean".into(),
            direction: direction.into(),
            quantile: None,
            winsorize_caps: None,
            variants: [
                ("control".to_owned(), v.clone()),
                ("treatment".to_owned(), v),
            ]
            .into(),
            effects,
        }
    }

    /// The primary `conv` (an increase is good) with one treatment effect.
    fn conv(delta: f64, significant: bool) -> MetricResult {
        metric(
            "conv",
            "primary",
            "increase_is_good",
            vec![effect("treatment", delta, significant)],
        )
    }

    fn look(metrics: Vec<MetricResult>, health: &[HealthStatus]) -> Results {
        let units: BTreeMap<String, u64> =
            [("control".to_owned(), 5000), ("treatment".to_owned(), 5000)].into();
        Results {
            experiment: "e".into(),
            as_of: "2026-01-11T00:00:00Z".into(),
            start: "2026-01-01T00:00:00Z".into(),
            analysis: "itt".into(),
            units: units.clone(),
            bot_exclusion: None,
            srm: Srm {
                chi2: 0.0,
                df: 1,
                p_value: 1.0,
                flagged: false,
                observed: units,
                expected: BTreeMap::new(),
            },
            metrics,
            segments: BTreeMap::new(),
            novelty: None,
            warnings: vec![],
            health: health
                .iter()
                .enumerate()
                .map(|(i, &status)| HealthCheck {
                    check: format!("c{i}"),
                    status,
                    figures: BTreeMap::new(),
                    message: format!("check {i} is {}", status.as_str()),
                })
                .collect(),
            decision: None,
        }
    }

    fn facts() -> LookFacts {
        LookFacts {
            elapsed_days: 10.0,
            min_duration_days: 7,
            planned_units: Some(20_000),
            alpha: 0.05,
            ..LookFacts::default()
        }
    }

    const OK: &[HealthStatus] = &[HealthStatus::Ok, HealthStatus::Ok];

    #[test]
    fn a_significant_improvement_with_healthy_data_ships() {
        let r = look(
            vec![
                conv(0.5, true),
                metric(
                    "latency",
                    "guardrail",
                    "increase_is_bad",
                    vec![effect("treatment", -1.0, true)],
                ),
            ],
            OK,
        );
        let d = decide(&r, &facts());
        assert_eq!(d.verdict, Verdict::Ship, "{d:#?}");
        assert_eq!(d.variant.as_deref(), Some("treatment"));
        assert!(d.reasons[0].contains("`conv` improved significantly in treatment: +5.00 %"));
    }

    #[test]
    fn harm_to_the_primary_or_a_guardrail_rolls_back() {
        for (role, direction, delta) in [
            ("primary", "increase_is_good", -0.5),
            ("primary", "increase_is_bad", 0.5),
        ] {
            let r = look(
                vec![metric(
                    "m",
                    role,
                    direction,
                    vec![effect("treatment", delta, true)],
                )],
                OK,
            );
            let d = decide(&r, &facts());
            assert_eq!(d.verdict, Verdict::RollBack, "{direction} {delta}");
            assert_eq!(d.variant.as_deref(), Some("treatment"));
        }
        let r = look(
            vec![
                conv(0.5, true),
                metric(
                    "latency",
                    "guardrail",
                    "increase_is_bad",
                    vec![effect("treatment", 2.0, true)],
                ),
            ],
            OK,
        );
        let d = decide(&r, &facts());
        assert_eq!(d.verdict, Verdict::RollBack);
        assert!(d.reasons[0].contains("Guardrail metric `latency` got significantly worse"));
        // A secondary metric getting worse is no reason to roll back.
        let r = look(
            vec![
                conv(0.5, true),
                metric(
                    "other",
                    "secondary",
                    "increase_is_good",
                    vec![effect("treatment", -2.0, true)],
                ),
            ],
            OK,
        );
        assert_eq!(decide(&r, &facts()).verdict, Verdict::Ship);
    }

    #[test]
    fn a_failing_check_makes_any_look_unhealthy() {
        let r = look(
            vec![conv(-0.5, true)],
            &[HealthStatus::Ok, HealthStatus::Fail],
        );
        let d = decide(&r, &facts());
        assert_eq!(d.verdict, Verdict::Unhealthy);
        assert_eq!(d.reasons[0], "check 1 is fail");
        assert!(d.reasons[1].contains("not to be trusted"));
        assert_eq!(d.variant, None);
    }

    #[test]
    fn a_warning_or_too_short_a_run_keeps_it_running_with_the_days_left() {
        let r = look(
            vec![conv(0.5, true)],
            &[HealthStatus::Ok, HealthStatus::Warn],
        );
        let d = decide(&r, &facts());
        assert_eq!(d.verdict, Verdict::KeepRunning);
        assert_eq!(d.reasons[1], "check 1 is warn");
        // 10,000 units in 10 days, 20,000 planned: 10 more days.
        assert_eq!(d.days_left, Some(10.0));
        // Nothing significant: keep running; at the planned units, say so.
        let flat = look(vec![conv(0.1, false)], OK);
        let d = decide(&flat, &facts());
        assert_eq!((d.verdict, d.days_left), (Verdict::KeepRunning, Some(10.0)));
        let reached = LookFacts {
            planned_units: Some(10_000),
            ..facts()
        };
        let d = decide(&flat, &reached);
        assert_eq!(d.days_left, Some(0.0));
        assert!(d.reasons[1].contains("likely smaller"), "{:?}", d.reasons);
        // The minimum duration bounds the days left from below.
        let early = LookFacts {
            elapsed_days: 2.0,
            planned_units: Some(10_500),
            ..facts()
        };
        assert_eq!(decide(&flat, &early).days_left, Some(5.0));
    }

    #[test]
    fn without_planned_units_the_mde_sizes_the_experiment() {
        let flat = look(vec![conv(0.1, false)], OK);
        let f = LookFacts {
            planned_units: None,
            mde: Some(0.05),
            ..facts()
        };
        // Mean 10, variance 25, +5 %: d = 0.1, n = 2·(1.95996 + 0.84162)²/0.01 = 1570 per variant.
        let need = sample_size(
            Baseline::Mean {
                mean: 10.0,
                variance: 25.0,
            },
            Mde::Relative(0.05),
            0.05,
            0.8,
        )
        .unwrap()
        .per_variant;
        assert_eq!(need, 1570);
        assert_eq!(needed_units(&flat, &f), Some(3140));
        assert_eq!(decide(&flat, &f).days_left, Some(0.0));
    }
}
