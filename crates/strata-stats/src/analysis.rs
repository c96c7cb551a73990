//! Whole-experiment analysis: every metric, every treatment against control.
//!
//! [`analyze`] ties the other modules together the way the platform reports
//! an experiment:
//!
//! 1. the SRM check on unit counts against configured weights;
//! 2. per metric, per-variant summaries (CUPED-adjusted or delta-method
//!    linearised where the metric calls for it) and a Welch test plus relative
//!    lift of each treatment against the control (variant 0);
//! 3. a multiple-testing correction over the family of all non-primary
//!    comparisons (secondary and guardrail metrics, every treatment); the
//!    primary metric is pre-registered and reported unadjusted;
//! 4. optionally a sequential analysis of the primary metric and a Bayesian
//!    summary;
//! 5. a display tier and warnings for every comparison.

use serde::{Deserialize, Serialize};

use crate::bayes::{bayes_summary, BayesSummary, NormalPrior};
use crate::cuped::cuped;
use crate::decision::{is_borderline, tier, Tier, Warning};
use crate::effect::{Comparison, Sample, VariantSummary};
use crate::error::{check_alpha, Error, Result};
use crate::moments::{CupedStats, MeanStats, RatioStats};
use crate::multiple::{adjust_p_values, Correction};
use crate::sequential::{
    always_valid, group_sequential_test, information_fraction, ConfidenceSequence,
    GroupSequentialResult, MixtureTuning, Spending,
};
use crate::srm::{srm_check, SrmResult, DEFAULT_SRM_ALPHA};

/// Analysis settings for one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    /// Two-sided significance level for tests and intervals.
    pub alpha: f64,
    /// Threshold of the sample ratio mismatch check.
    pub srm_alpha: f64,
    /// Correction applied to the non-primary comparisons.
    pub correction: Correction,
    /// Pre-registered sample size per variant, for the `underpowered` warning
    /// and the group-sequential information fraction.
    pub planned_n_per_variant: Option<u64>,
    /// Sequential method for the primary metric, if any.
    pub sequential: Option<SequentialConfig>,
    /// Bayesian summary (opt-in): `Some(None)` for the flat prior.
    pub bayesian: Option<Option<NormalPrior>>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            srm_alpha: DEFAULT_SRM_ALPHA,
            correction: Correction::default(),
            planned_n_per_variant: None,
            sequential: None,
            bayesian: None,
        }
    }
}

/// Sequential testing of the primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
#[non_exhaustive]
pub enum SequentialConfig {
    /// Lan–DeMets group-sequential test; needs `planned_n_per_variant`.
    GroupSequential {
        /// Spending function.
        spending: Spending,
        /// Information fractions of the looks already taken, in order.
        previous_fractions: Vec<f64>,
    },
    /// Always-valid confidence sequence.
    AlwaysValid {
        /// Mixture tuning.
        tuning: MixtureTuning,
    },
}

/// A metric's role in the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    /// The pre-registered decision metric: reported unadjusted.
    Primary,
    /// A secondary metric: adjusted for multiplicity.
    Secondary,
    /// A guardrail metric: adjusted for multiplicity.
    Guardrail,
}

/// Per-variant sufficient statistics of one metric, variant 0 being control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "variants")]
pub enum MetricData {
    /// Mean (including binomial 0/1) metric.
    Mean(Vec<MeanStats>),
    /// Ratio metric, delta method.
    Ratio(Vec<RatioStats>),
    /// Mean metric with a pre-experiment covariate, CUPED-adjusted.
    Cuped(Vec<CupedStats>),
}

impl MetricData {
    fn len(&self) -> usize {
        match self {
            MetricData::Mean(v) => v.len(),
            MetricData::Ratio(v) => v.len(),
            MetricData::Cuped(v) => v.len(),
        }
    }
}

/// One metric to analyse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricInput {
    /// Metric name.
    pub name: String,
    /// Role.
    pub role: MetricRole,
    /// Statistics per variant.
    pub data: MetricData,
}

/// A variant's configuration and unit count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantInput {
    /// Variant name.
    pub name: String,
    /// Configured traffic weight.
    pub weight: f64,
    /// Units assigned.
    pub units: u64,
}

/// CUPED details of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CupedSummary {
    /// Pooled θ.
    pub theta: f64,
    /// Pooled variance reduction `1 − var(y')/var(y)`.
    pub variance_reduction: Option<f64>,
}

/// Sequential analysis outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
#[non_exhaustive]
pub enum SequentialOutcome {
    /// Group-sequential boundary and decision.
    GroupSequential(GroupSequentialResult),
    /// Always-valid confidence sequence.
    AlwaysValid(ConfidenceSequence),
    /// The data could not support the sequential test.
    InsufficientData,
}

/// One treatment against control on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Treatment variant name.
    pub treatment: String,
    /// Welch test and lift.
    pub comparison: Comparison,
    /// Multiplicity-adjusted p-value (non-primary metrics).
    pub adjusted_p_value: Option<f64>,
    /// True for the primary metric: pre-registered, reported unadjusted.
    pub pre_registered: bool,
    /// Display tier from the (adjusted, if applicable) p-value.
    pub tier: Tier,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// Sequential analysis (primary metric, when configured).
    pub sequential: Option<SequentialOutcome>,
    /// Bayesian summary (when configured and computable).
    pub bayesian: Option<BayesSummary>,
}

/// Results for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// Metric name.
    pub name: String,
    /// Role.
    pub role: MetricRole,
    /// Per-variant summaries (`None` for a variant with fewer than two units).
    pub variants: Vec<Option<VariantSummary>>,
    /// CUPED details, for CUPED metrics.
    pub cuped: Option<CupedSummary>,
    /// Each treatment against control.
    pub comparisons: Vec<ComparisonReport>,
}

/// The analysis of a whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    /// Sample ratio mismatch check.
    pub srm: SrmResult,
    /// Per-metric results, in input order.
    pub metrics: Vec<MetricReport>,
}

fn samples(data: &MetricData) -> Result<(Vec<Option<Sample>>, Option<CupedSummary>)> {
    Ok(match data {
        MetricData::Mean(v) => {
            for s in v {
                s.validate()?;
            }
            (v.iter().map(Sample::from_mean).collect(), None)
        }
        MetricData::Ratio(v) => {
            for s in v {
                s.validate()?;
            }
            (v.iter().map(Sample::from_ratio).collect(), None)
        }
        MetricData::Cuped(v) => {
            let a = cuped(v)?;
            (
                a.variants.iter().map(|c| c.adjusted_sample()).collect(),
                Some(CupedSummary {
                    theta: a.theta,
                    variance_reduction: a.variance_reduction,
                }),
            )
        }
    })
}

/// Analyses every metric of an experiment; `variants[0]` is the control.
pub fn analyze(
    config: &AnalysisConfig,
    variants: &[VariantInput],
    metrics: &[MetricInput],
) -> Result<ExperimentReport> {
    check_alpha("alpha", config.alpha)?;
    if variants.len() < 2 {
        return Err(Error::Invalid {
            field: "variants",
            reason: "a control and at least one treatment are needed",
        });
    }
    let units: Vec<u64> = variants.iter().map(|v| v.units).collect();
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    let srm = srm_check(&units, &weights, config.srm_alpha)?;

    let mut reports = Vec::with_capacity(metrics.len());
    // (metric index, comparison index, p) of the family to adjust.
    let mut family: Vec<(usize, usize, f64)> = Vec::new();
    for (mi, metric) in metrics.iter().enumerate() {
        if metric.data.len() != variants.len() {
            return Err(Error::LengthMismatch {
                field: "metrics.data",
                expected: variants.len(),
                actual: metric.data.len(),
            });
        }
        let (samples, cuped_summary) = samples(&metric.data)?;
        let primary = metric.role == MetricRole::Primary;
        let mut comparisons = Vec::with_capacity(variants.len() - 1);
        for (ti, treatment) in variants.iter().enumerate().skip(1) {
            let (c, t) = (samples[0].as_ref(), samples[ti].as_ref());
            let comparison = Comparison::new(c, t, config.alpha)?;
            if !primary {
                if let Some(p) = comparison.p_value() {
                    family.push((mi, ti - 1, p));
                }
            }
            let sequential = match (&config.sequential, primary) {
                (Some(seq), true) => Some(sequential_outcome(seq, config, c, t, &comparison)?),
                _ => None,
            };
            let bayesian = match (config.bayesian, comparison.welch) {
                (Some(prior), Some(w)) => Some(bayes_summary(w.difference, w.std_error, prior)?),
                _ => None,
            };
            comparisons.push(ComparisonReport {
                treatment: treatment.name.clone(),
                comparison,
                adjusted_p_value: None,
                pre_registered: primary,
                tier: Tier::NotSignificant,
                warnings: Vec::new(),
                sequential,
                bayesian,
            });
        }
        reports.push(MetricReport {
            name: metric.name.clone(),
            role: metric.role,
            variants: samples
                .iter()
                .map(|s| s.as_ref().map(VariantSummary::from))
                .collect(),
            cuped: cuped_summary,
            comparisons,
        });
    }

    let ps: Vec<f64> = family.iter().map(|f| f.2).collect();
    let adjusted = adjust_p_values(&ps, config.correction)?;
    for (&(mi, ci, _), &adj) in family.iter().zip(&adjusted) {
        reports[mi].comparisons[ci].adjusted_p_value = Some(adj);
    }

    for (metric, report) in metrics.iter().zip(reports.iter_mut()) {
        let n = |i: usize| match &metric.data {
            MetricData::Mean(v) => v[i].n(),
            MetricData::Ratio(v) => v[i].n(),
            MetricData::Cuped(v) => v[i].n(),
        };
        for (ci, cmp) in report.comparisons.iter_mut().enumerate() {
            let p = if cmp.pre_registered {
                cmp.comparison.p_value()
            } else {
                cmp.adjusted_p_value
            };
            cmp.tier = tier(p);
            if srm.mismatch {
                cmp.warnings.push(Warning::Srm);
            }
            if let Some(planned) = config.planned_n_per_variant {
                if n(0) < planned || n(ci + 1) < planned {
                    cmp.warnings.push(Warning::Underpowered);
                }
            }
            if p.is_some_and(is_borderline) {
                cmp.warnings.push(Warning::Borderline);
            }
            if cmp.comparison.insufficient_data.is_some() {
                cmp.warnings.push(Warning::InsufficientData);
            }
        }
    }
    Ok(ExperimentReport {
        srm,
        metrics: reports,
    })
}

fn sequential_outcome(
    seq: &SequentialConfig,
    config: &AnalysisConfig,
    control: Option<&Sample>,
    treatment: Option<&Sample>,
    comparison: &Comparison,
) -> Result<SequentialOutcome> {
    let (Some(c), Some(t), Some(w)) = (control, treatment, comparison.welch) else {
        return Ok(SequentialOutcome::InsufficientData);
    };
    Ok(match seq {
        SequentialConfig::GroupSequential {
            spending,
            previous_fractions,
        } => {
            let planned = config.planned_n_per_variant.ok_or(Error::Invalid {
                field: "planned_n_per_variant",
                reason: "required by the group-sequential method",
            })?;
            let now = information_fraction(c.n + t.n, 2 * planned)?;
            let mut fractions = previous_fractions.clone();
            fractions.push(now);
            SequentialOutcome::GroupSequential(group_sequential_test(
                &fractions,
                w.t,
                config.alpha,
                *spending,
            )?)
        }
        SequentialConfig::AlwaysValid { tuning } => {
            match always_valid(c, t, config.alpha, *tuning)? {
                Ok(cs) => SequentialOutcome::AlwaysValid(cs),
                Err(_) => SequentialOutcome::InsufficientData,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(n: u64, m: f64, v: f64) -> MeanStats {
        MeanStats::from_moments(n, m, v * (n - 1) as f64).unwrap()
    }

    #[test]
    fn primary_unadjusted_secondary_adjusted_with_warnings() {
        let variants = vec![
            VariantInput {
                name: "control".into(),
                weight: 0.5,
                units: 10_000,
            },
            VariantInput {
                name: "treatment".into(),
                weight: 0.5,
                units: 10_600,
            },
        ];
        let metrics = vec![
            MetricInput {
                name: "conversion".into(),
                role: MetricRole::Primary,
                data: MetricData::Mean(vec![mean(10_000, 0.10, 0.09), mean(10_600, 0.11, 0.0979)]),
            },
            MetricInput {
                name: "revenue".into(),
                role: MetricRole::Secondary,
                data: MetricData::Mean(vec![mean(10_000, 5.0, 100.0), mean(10_600, 5.3, 100.0)]),
            },
            MetricInput {
                name: "empty".into(),
                role: MetricRole::Guardrail,
                data: MetricData::Mean(vec![MeanStats::new(), mean(3, 1.0, 1.0)]),
            },
        ];
        let config = AnalysisConfig {
            planned_n_per_variant: Some(20_000),
            bayesian: Some(None),
            ..AnalysisConfig::default()
        };
        let r = analyze(&config, &variants, &metrics).unwrap();
        assert!(r.srm.mismatch);
        let primary = &r.metrics[0].comparisons[0];
        assert!(primary.pre_registered && primary.adjusted_p_value.is_none());
        assert!(
            primary.warnings.contains(&Warning::Srm)
                && primary.warnings.contains(&Warning::Underpowered)
        );
        assert!(primary.bayesian.is_some());
        let secondary = &r.metrics[1].comparisons[0];
        // A family of one: Holm leaves it unchanged.
        assert_eq!(secondary.adjusted_p_value, secondary.comparison.p_value());
        let empty = &r.metrics[2].comparisons[0];
        assert!(empty.warnings.contains(&Warning::InsufficientData));
        assert_eq!(empty.tier, Tier::NotSignificant);
        assert!(r.metrics[2].variants[0].is_none());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"insufficient_data\":\"too_few_units\""));
    }

    #[test]
    fn rejects_mismatched_metrics_and_missing_plan() {
        let variants = vec![
            VariantInput {
                name: "c".into(),
                weight: 1.0,
                units: 10,
            },
            VariantInput {
                name: "t".into(),
                weight: 1.0,
                units: 10,
            },
        ];
        let bad = vec![MetricInput {
            name: "m".into(),
            role: MetricRole::Primary,
            data: MetricData::Mean(vec![mean(10, 1.0, 1.0)]),
        }];
        assert!(matches!(
            analyze(&AnalysisConfig::default(), &variants, &bad),
            Err(Error::LengthMismatch { .. })
        ));
        let ok = vec![MetricInput {
            name: "m".into(),
            role: MetricRole::Primary,
            data: MetricData::Mean(vec![mean(10, 1.0, 1.0), mean(10, 1.2, 1.0)]),
        }];
        let config = AnalysisConfig {
            sequential: Some(SequentialConfig::GroupSequential {
                spending: Spending::OBrienFleming,
                previous_fractions: vec![],
            }),
            ..AnalysisConfig::default()
        };
        assert!(analyze(&config, &variants, &ok).is_err());
    }
}
