//! A metric's part of the results document, from strata-stats' report:
//! per-variant values and each treatment's effect with its interval, tests,
//! CUPED, sequential decision and warnings.

use super::*;

pub(super) fn pair(i: &strata_stats::Interval) -> [f64; 2] {
    [i.lower, i.upper]
}

/// strata-stats' posterior summary, read in the metric's direction: where
/// an increase is bad, "better" is `P(δ < 0)` and the expected losses swap.
fn bayesian(
    b: &strata_stats::bayes::BayesSummary,
    direction: crate::metrics::Direction,
) -> results::Bayesian {
    let increase_is_good = direction == crate::metrics::Direction::IncreaseIsGood;
    results::Bayesian {
        posterior_mean: b.posterior_mean,
        posterior_std_dev: b.posterior_std_dev,
        prob_treatment_better: if increase_is_good {
            b.prob_treatment_better
        } else {
            1.0 - b.prob_treatment_better
        },
        expected_loss_treatment: if increase_is_good {
            b.expected_loss_treatment
        } else {
            b.expected_loss_control
        },
        expected_loss_control: if increase_is_good {
            b.expected_loss_control
        } else {
            b.expected_loss_treatment
        },
    }
}

impl Analyzer {
    pub(super) fn metric_result(
        &self,
        p: &Planned,
        input: &MetricInput,
        rep: &MetricReport,
        caps: Option<Vec<f64>>,
        order: &[String],
    ) -> results::MetricResult {
        let alpha = self.spec.spec.alpha;
        let mut variants = BTreeMap::new();
        for (i, name) in order.iter().enumerate() {
            let vr = match &input.data {
                MetricData::Mean(v) => results::VariantResult {
                    n: v[i].n(),
                    mean: (v[i].n() > 0).then(|| v[i].mean()),
                    variance: v[i].variance(),
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
                MetricData::Cuped(v) => {
                    let raw = v[i].metric();
                    results::VariantResult {
                        n: raw.n(),
                        mean: (raw.n() > 0).then(|| raw.mean()),
                        variance: raw.variance(),
                        cuped_mean: rep.variants[i].as_ref().map(|s| s.mean),
                        value: None,
                        ci: None,
                    }
                }
                MetricData::Ratio(v) => results::VariantResult {
                    n: v[i].n(),
                    mean: (v[i].n() > 0 && v[i].mean_den() != 0.0)
                        .then(|| v[i].mean_num() / v[i].mean_den()),
                    variance: rep.variants[i].as_ref().and_then(|s| s.variance),
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
                MetricData::Quantile { q, variants } => {
                    let est = rep.quantiles.as_ref().and_then(|qs| qs[i].as_ref());
                    results::VariantResult {
                        n: variants[i].n() as u64,
                        mean: None,
                        variance: None,
                        cuped_mean: None,
                        value: variants[i].quantile(*q),
                        ci: est.map(|e| pair(&e.ci)),
                    }
                }
                _ => results::VariantResult {
                    n: 0,
                    mean: None,
                    variance: None,
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
            };
            variants.insert(name.clone(), vr);
        }
        let effects = rep
            .comparisons
            .iter()
            .enumerate()
            .map(|(ci, c)| self.effect(p, input, rep, c, ci + 1, order, alpha))
            .collect();
        results::MetricResult {
            metric: p.metric.key.clone(),
            role: match p.role {
                MetricRole::Primary => "primary",
                MetricRole::Secondary => "secondary",
                MetricRole::Guardrail => "guardrail",
            }
            .into(),
            kind: p.metric.kind.as_str().into(),
            direction: match p.metric.direction() {
                crate::metrics::Direction::IncreaseIsGood => "increase_is_good",
                crate::metrics::Direction::IncreaseIsBad => "increase_is_bad",
            }
            .into(),
            quantile: p.metric.quantile,
            winsorize_caps: caps,
            variants,
            effects,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn effect(
        &self,
        p: &Planned,
        input: &MetricInput,
        rep: &MetricReport,
        c: &ComparisonReport,
        ti: usize,
        order: &[String],
        alpha: f64,
    ) -> results::Effect {
        let json_name = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
        let (delta, ci, relative, relative_ci) = match (&c.comparison.welch, &c.quantile) {
            (Some(w), _) => (
                Some(w.difference),
                Some(pair(&w.ci)),
                c.comparison.lift.map(|l| l.estimate),
                c.comparison.lift.map(|l| pair(&l.ci)),
            ),
            (None, Some(q)) => (
                Some(q.difference),
                Some(pair(&q.ci)),
                (q.control.estimate != 0.0).then(|| q.difference / q.control.estimate),
                None,
            ),
            _ => (None, None, None, None),
        };
        let unadjusted = match &input.data {
            MetricData::Cuped(v) => {
                let (cs, ts) = (v[0].metric(), v[ti].metric());
                Comparison::new(
                    Sample::from_mean(&cs).as_ref(),
                    Sample::from_mean(&ts).as_ref(),
                    alpha,
                )
                .ok()
                .map(|u| results::Unadjusted {
                    delta: u.welch.map(|w| w.difference),
                    ci: u.welch.map(|w| pair(&w.ci)),
                    p_value: u.p_value(),
                })
            }
            _ => None,
        };
        let sequential = c.sequential.as_ref().map(|s| match s {
            SequentialOutcome::GroupSequential(g) => results::Sequential {
                method: "group_sequential".into(),
                information_fraction: g.looks.last().map(|l| l.information_fraction),
                previous_fractions: g.looks[..g.looks.len().saturating_sub(1)]
                    .iter()
                    .map(|l| l.information_fraction)
                    .collect(),
                z: Some(g.z),
                boundary: Some(g.boundary),
                ci: None,
                p_value: None,
                decision: json_name(&serde_json::to_value(g.decision).unwrap_or_default()),
            },
            SequentialOutcome::AlwaysValid(cs) => results::Sequential {
                method: "always_valid".into(),
                information_fraction: None,
                previous_fractions: Vec::new(),
                z: None,
                boundary: None,
                ci: Some(pair(&cs.ci)),
                p_value: Some(cs.p_value),
                decision: json_name(&serde_json::to_value(cs.decision).unwrap_or_default()),
            },
            _ => results::Sequential {
                method: match self.spec.spec.sequential {
                    SequentialMethod::AlwaysValid => "always_valid",
                    _ => "group_sequential",
                }
                .into(),
                information_fraction: None,
                previous_fractions: Vec::new(),
                z: None,
                boundary: None,
                ci: None,
                p_value: None,
                decision: "insufficient_data".into(),
            },
        });
        let p_value = c.p_value();
        let significant = c.significant;
        // Only secondary metrics are adjusted for multiplicity.
        let adjusted_p_value = match p.role {
            MetricRole::Secondary => c.adjusted_p_value,
            _ => None,
        };
        results::Effect {
            variant: order[ti].clone(),
            control: order[0].clone(),
            delta,
            ci,
            relative,
            relative_ci,
            p_value,
            adjusted_p_value,
            significant,
            tier: json_name(&serde_json::to_value(c.tier).unwrap_or_default()),
            cuped: rep.cuped.map(|cu| results::CupedInfo {
                theta: cu.theta,
                variance_reduction: cu.variance_reduction,
            }),
            unadjusted,
            sequential,
            bayesian: c.bayesian.map(|b| bayesian(&b, p.metric.direction())),
            insufficient_data: c
                .comparison
                .insufficient_data
                .map(|r| json_name(&serde_json::to_value(r).unwrap_or_default())),
            warnings: c
                .warnings
                .iter()
                .map(|w| json_name(&serde_json::to_value(w).unwrap_or_default()))
                .collect(),
        }
    }
}
