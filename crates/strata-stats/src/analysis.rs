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
//! 4. optionally a sequential analysis of every comparison (see below) and a
//!    Bayesian summary;
//! 5. when per-segment statistics are given, the Simpson's paradox check;
//! 6. a display tier and warnings for every comparison.
//!
//! Quantile metrics take the same path with the quantile difference of
//! [`crate::quantile`] in place of the Welch test.
//!
//! # Significance under repeated looks
//!
//! An experiment analysed sequentially is looked at again and again, so
//! every comparison — not only the primary metric's — is tested
//! sequentially; a fixed-horizon p-value read at every look would cross
//! α by chance in an A/A test sooner or later. `significant` is then:
//!
//! - primary and guardrail metrics: the comparison's own sequential decision
//!   at α (guardrail metrics stay unadjusted for multiplicity, so that harm
//!   is caught early);
//! - secondary metrics, always-valid: the family correction applied to the
//!   always-valid p-values (valid at any look, so Holm over them controls
//!   the family-wise error over all looks);
//! - secondary metrics, group-sequential: each comparison's boundary at
//!   α/m, m the number of secondary comparisons (Bonferroni: spending
//!   functions have no p-value for Holm to order).
//!
//! Without a sequential method the primary and guardrail metrics are
//! significant at p < α and secondary metrics at adjusted p < α, as a
//! fixed-horizon test read once at its planned sample.

use serde::{Deserialize, Serialize};

use crate::bayes::{bayes_summary, BayesSummary, NormalPrior};
use crate::cuped::cuped;
use crate::decision::{
    is_borderline, simpsons_paradox, tier, SegmentEffect, SimpsonCheck, Tier, Warning,
    DEFAULT_MIN_SEGMENT_N,
};
use crate::effect::{Comparison, InsufficientData, Sample, VariantSummary};
use crate::error::{check_alpha, Error, Result};
use crate::moments::{CupedStats, MeanStats, RatioStats};
use crate::multiple::{adjust_p_values, Correction};
use crate::quantile::{
    quantile_ci, quantile_difference, QuantileDifference, QuantileEstimate, QuantileSample,
};
use crate::sequential::{
    always_valid, always_valid_normal, group_sequential_test, information_fraction,
    ConfidenceSequence, GroupSequentialResult, MixtureTuning, SequentialDecision, Spending,
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
    /// Minimum segment size counted by the Simpson's paradox check.
    pub min_segment_n: u64,
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
            min_segment_n: DEFAULT_MIN_SEGMENT_N,
        }
    }
}

/// Sequential testing of every comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
#[non_exhaustive]
pub enum SequentialConfig {
    /// Lan–DeMets group-sequential test; needs `planned_n_per_variant`. The
    /// information fraction is `(n_c + n_t) / (2·planned_n_per_variant)` and
    /// the statistic the normal deviate with the Welch test's p-value (the
    /// quantile difference over its standard error for quantile metrics).
    GroupSequential {
        /// Spending function.
        spending: Spending,
        /// Information fractions of the looks already taken, in order;
        /// those not below a comparison's own fraction now are left out of
        /// its boundary.
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
    /// A guardrail metric: its p-value is part of the adjusted family, but
    /// its significance is read unadjusted, so that harm is caught early.
    Guardrail,
}

/// Per-variant statistics of one metric, variant 0 being control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "data")]
#[non_exhaustive]
pub enum MetricData {
    /// Mean (including binomial 0/1) metric.
    Mean(Vec<MeanStats>),
    /// Ratio metric, delta method.
    Ratio(Vec<RatioStats>),
    /// Mean metric with a pre-experiment covariate, CUPED-adjusted.
    Cuped(Vec<CupedStats>),
    /// Quantile metric (for example p95 latency) from per-unit values.
    Quantile {
        /// Probability level in (0, 1).
        q: f64,
        /// Values per variant.
        variants: Vec<QuantileSample>,
    },
}

impl MetricData {
    fn len(&self) -> usize {
        match self {
            MetricData::Mean(v) => v.len(),
            MetricData::Ratio(v) => v.len(),
            MetricData::Cuped(v) => v.len(),
            MetricData::Quantile { variants, .. } => variants.len(),
        }
    }

    fn n(&self, i: usize) -> u64 {
        match self {
            MetricData::Mean(v) => v[i].n(),
            MetricData::Ratio(v) => v[i].n(),
            MetricData::Cuped(v) => v[i].n(),
            MetricData::Quantile { variants, .. } => variants[i].n() as u64,
        }
    }

    /// Point estimate of variant `i` (mean, ratio or quantile), if defined.
    fn estimate(&self, i: usize) -> Option<f64> {
        match self {
            MetricData::Mean(v) => (v[i].n() > 0).then(|| v[i].mean()),
            MetricData::Ratio(v) => {
                (v[i].n() > 0 && v[i].mean_den() != 0.0).then(|| v[i].mean_num() / v[i].mean_den())
            }
            MetricData::Cuped(v) => (v[i].n() > 0).then(|| v[i].mean_y()),
            MetricData::Quantile { q, variants } => variants[i].quantile(*q),
        }
    }
}

/// Statistics of one metric within one segment (country, platform, ...),
/// for the Simpson's paradox check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInput {
    /// Segment name.
    pub name: String,
    /// Per-variant statistics within the segment.
    pub data: MetricData,
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
    /// Optional per-segment statistics for the Simpson's paradox check.
    #[serde(default)]
    pub segments: Vec<SegmentInput>,
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
    /// Welch test and lift (for quantile metrics only `insufficient_data` is used).
    pub comparison: Comparison,
    /// Quantile difference, for quantile metrics.
    pub quantile: Option<QuantileDifference>,
    /// Simpson's paradox check, when segments were given.
    pub simpson: Option<SimpsonCheck>,
    /// Multiplicity-adjusted p-value (non-primary metrics): of the
    /// always-valid p-values when the experiment uses always-valid
    /// sequences, else of the fixed-horizon ones.
    pub adjusted_p_value: Option<f64>,
    /// True for the primary metric: pre-registered, reported unadjusted.
    pub pre_registered: bool,
    /// Whether the comparison is significant under the experiment's method
    /// (see the module documentation).
    pub significant: bool,
    /// Display tier from the (adjusted, if applicable) p-value; never above
    /// `not_significant` when a sequential test did not find significance.
    pub tier: Tier,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// Sequential analysis, when the experiment has a sequential method.
    pub sequential: Option<SequentialOutcome>,
    /// Bayesian summary (when configured and computable).
    pub bayesian: Option<BayesSummary>,
}

impl ComparisonReport {
    /// The unadjusted p-value (Welch or quantile difference), when a test was possible.
    pub fn p_value(&self) -> Option<f64> {
        self.comparison
            .p_value()
            .or(self.quantile.map(|q| q.p_value))
    }

    /// The estimated difference treatment − control, when available.
    pub fn difference(&self) -> Option<f64> {
        self.comparison
            .welch
            .map(|w| w.difference)
            .or(self.quantile.map(|q| q.difference))
    }
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
    /// Per-variant quantiles with intervals, for quantile metrics.
    pub quantiles: Option<Vec<Option<QuantileEstimate>>>,
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
        MetricData::Quantile { variants, .. } => (vec![None; variants.len()], None),
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

    let treatments = variants.len() - 1;
    let secondary_tests = metrics
        .iter()
        .filter(|m| m.role == MetricRole::Secondary)
        .count()
        * treatments;
    let mut reports = Vec::with_capacity(metrics.len());
    // (metric index, comparison index, p) of the family to adjust.
    let mut family: Vec<(usize, usize, f64)> = Vec::new();
    for (mi, metric) in metrics.iter().enumerate() {
        for data in std::iter::once(&metric.data).chain(metric.segments.iter().map(|s| &s.data)) {
            if data.len() != variants.len() {
                return Err(Error::LengthMismatch {
                    field: "metrics.data",
                    expected: variants.len(),
                    actual: data.len(),
                });
            }
        }
        let (samples, cuped_summary) = samples(&metric.data)?;
        let quantiles = match &metric.data {
            MetricData::Quantile { q, variants } => Some(
                variants
                    .iter()
                    .map(|v| quantile_ci(v, *q, config.alpha).map(|r| r.ok()))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => None,
        };
        let primary = metric.role == MetricRole::Primary;
        let mut comparisons = Vec::with_capacity(variants.len() - 1);
        for (ti, treatment) in variants.iter().enumerate().skip(1) {
            let (c, t) = (samples[0].as_ref(), samples[ti].as_ref());
            let (comparison, quantile) = match &metric.data {
                MetricData::Quantile { q, variants: qs } => {
                    match quantile_difference(&qs[0], &qs[ti], *q, config.alpha)? {
                        Ok(d) => (
                            Comparison {
                                welch: None,
                                lift: None,
                                insufficient_data: None,
                            },
                            Some(d),
                        ),
                        Err(reason) => (
                            Comparison {
                                welch: None,
                                lift: None,
                                insufficient_data: Some(reason),
                            },
                            None,
                        ),
                    }
                }
                MetricData::Ratio(v) if c.is_none() || t.is_none() => {
                    // A ratio with no denominator is undefined, not merely small.
                    let zero_den = |i: usize| v[i].n() >= 2 && v[i].mean_den() == 0.0;
                    let reason = if zero_den(0) || zero_den(ti) {
                        InsufficientData::ZeroBaseline
                    } else {
                        InsufficientData::TooFewUnits
                    };
                    (
                        Comparison {
                            welch: None,
                            lift: None,
                            insufficient_data: Some(reason),
                        },
                        None,
                    )
                }
                _ => (Comparison::new(c, t, config.alpha)?, None),
            };
            let sequential = match &config.sequential {
                Some(seq) => {
                    // Bonferroni share of the secondary family for boundaries.
                    let level = match seq {
                        SequentialConfig::GroupSequential { .. }
                            if metric.role == MetricRole::Secondary =>
                        {
                            config.alpha / secondary_tests as f64
                        }
                        _ => config.alpha,
                    };
                    Some(sequential_outcome(
                        seq,
                        config,
                        level,
                        (c, t),
                        &comparison,
                        quantile.as_ref(),
                    )?)
                }
                None => None,
            };
            let bayesian = match (config.bayesian, comparison.welch) {
                (Some(prior), Some(w)) => Some(bayes_summary(w.difference, w.std_error, prior)?),
                _ => None,
            };
            let mut report = ComparisonReport {
                treatment: treatment.name.clone(),
                comparison,
                quantile,
                simpson: None,
                adjusted_p_value: None,
                pre_registered: primary,
                significant: false,
                tier: Tier::NotSignificant,
                warnings: Vec::new(),
                sequential,
                bayesian,
            };
            if let (Some(aggregate), false) = (report.difference(), metric.segments.is_empty()) {
                let segs: Vec<SegmentEffect> = metric
                    .segments
                    .iter()
                    .filter_map(|s| {
                        let effect = s.data.estimate(ti)? - s.data.estimate(0)?;
                        Some(SegmentEffect {
                            effect,
                            n: s.data.n(0) + s.data.n(ti),
                        })
                    })
                    .collect();
                report.simpson = Some(simpsons_paradox(aggregate, &segs, config.min_segment_n)?);
            }
            if !primary {
                // Under always-valid sequences the family is of the
                // always-valid p-values, so that the adjusted ones stay
                // valid at every look.
                let p = match &report.sequential {
                    Some(SequentialOutcome::AlwaysValid(cs)) => Some(cs.p_value),
                    _ => report.p_value(),
                };
                if let Some(p) = p {
                    family.push((mi, ti - 1, p));
                }
            }
            comparisons.push(report);
        }
        reports.push(MetricReport {
            name: metric.name.clone(),
            role: metric.role,
            variants: samples
                .iter()
                .map(|s| s.as_ref().map(VariantSummary::from))
                .collect(),
            cuped: cuped_summary,
            quantiles,
            comparisons,
        });
    }

    let ps: Vec<f64> = family.iter().map(|f| f.2).collect();
    let adjusted = adjust_p_values(&ps, config.correction)?;
    for (&(mi, ci, _), &adj) in family.iter().zip(&adjusted) {
        reports[mi].comparisons[ci].adjusted_p_value = Some(adj);
    }

    for (metric, report) in metrics.iter().zip(reports.iter_mut()) {
        for (ci, cmp) in report.comparisons.iter_mut().enumerate() {
            let p = if cmp.pre_registered {
                cmp.p_value()
            } else {
                cmp.adjusted_p_value
            };
            cmp.significant = match (&cmp.sequential, metric.role) {
                (Some(SequentialOutcome::AlwaysValid(_)), MetricRole::Secondary)
                | (None, MetricRole::Secondary) => {
                    cmp.adjusted_p_value.is_some_and(|p| p < config.alpha)
                }
                (Some(SequentialOutcome::AlwaysValid(cs)), _) => {
                    cs.decision == SequentialDecision::Significant
                }
                (Some(SequentialOutcome::GroupSequential(g)), _) => {
                    g.decision == SequentialDecision::Significant
                }
                (Some(SequentialOutcome::InsufficientData), _) => false,
                (None, _) => cmp.p_value().is_some_and(|p| p < config.alpha),
            };
            cmp.tier = if cmp.sequential.is_some() && !cmp.significant {
                Tier::NotSignificant
            } else {
                tier(p)
            };
            if srm.mismatch {
                cmp.warnings.push(Warning::Srm);
            }
            if let Some(planned) = config.planned_n_per_variant {
                if metric.data.n(0) < planned || metric.data.n(ci + 1) < planned {
                    cmp.warnings.push(Warning::Underpowered);
                }
            }
            if p.is_some_and(is_borderline) {
                cmp.warnings.push(Warning::Borderline);
            }
            if cmp.comparison.insufficient_data.is_some() {
                cmp.warnings.push(Warning::InsufficientData);
            }
            if cmp.simpson.is_some_and(|s| s.flagged) {
                cmp.warnings.push(Warning::SimpsonsParadox);
            }
        }
    }
    Ok(ExperimentReport {
        srm,
        metrics: reports,
    })
}

/// The sequential test of one comparison at level `alpha`: on the Welch
/// statistic for means, ratios and CUPED, on the quantile difference's
/// normal approximation for quantiles.
fn sequential_outcome(
    seq: &SequentialConfig,
    config: &AnalysisConfig,
    alpha: f64,
    (control, treatment): (Option<&Sample>, Option<&Sample>),
    comparison: &Comparison,
    quantile: Option<&QuantileDifference>,
) -> Result<SequentialOutcome> {
    // (difference, standard error, normal deviate, units of both arms)
    let stat = match (control, treatment, comparison.welch, quantile) {
        (Some(c), Some(t), Some(w), _) => (w.difference, w.std_error, w.z_equivalent(), c.n + t.n),
        (_, _, _, Some(q)) if q.std_error > 0.0 => (
            q.difference,
            q.std_error,
            q.difference / q.std_error,
            q.control.n + q.treatment.n,
        ),
        _ => return Ok(SequentialOutcome::InsufficientData),
    };
    let (difference, se, z, units) = stat;
    Ok(match seq {
        SequentialConfig::GroupSequential {
            spending,
            previous_fractions,
        } => {
            let planned = config.planned_n_per_variant.ok_or(Error::Invalid {
                field: "planned_n_per_variant",
                reason: "required by the group-sequential method",
            })?;
            let now = information_fraction(units, 2 * planned)?;
            // The earlier looks' fractions count exposed units; a metric
            // measured on fewer units (a mean over the units with an event,
            // a quantile) can be below them now. Those looks are left out,
            // as a look with no new information is: the boundary is then
            // that of an earlier look, more conservative, never less.
            let mut fractions: Vec<f64> = previous_fractions
                .iter()
                .copied()
                .filter(|&f| f > 0.0 && f < now)
                .collect();
            fractions.push(now);
            // Boundaries are for normal statistics: use the normal deviate
            // with the Welch test's p-value.
            SequentialOutcome::GroupSequential(group_sequential_test(
                &fractions, z, alpha, *spending,
            )?)
        }
        SequentialConfig::AlwaysValid { tuning } => {
            let cs = match (control, treatment) {
                (Some(c), Some(t)) => always_valid(c, t, alpha, *tuning)?,
                _ => always_valid_normal(difference, se, units, alpha, *tuning)?,
            };
            match cs {
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
                segments: vec![],
            },
            MetricInput {
                name: "revenue".into(),
                role: MetricRole::Secondary,
                // Treatment is ahead overall only because it has more web traffic.
                data: MetricData::Mean(vec![
                    mean(10_000, 5.0, 100.0),
                    mean(10_600, 59_080.0 / 10_600.0, 100.0),
                ]),
                segments: vec![
                    SegmentInput {
                        name: "web".into(),
                        data: MetricData::Mean(vec![
                            mean(4_000, 6.0, 100.0),
                            mean(9_000, 5.8, 100.0),
                        ]),
                    },
                    SegmentInput {
                        name: "app".into(),
                        data: MetricData::Mean(vec![
                            mean(6_000, 26_000.0 / 6_000.0, 100.0),
                            mean(1_600, 4.3, 100.0),
                        ]),
                    },
                ],
            },
            MetricInput {
                name: "empty".into(),
                role: MetricRole::Guardrail,
                data: MetricData::Mean(vec![MeanStats::new(), mean(3, 1.0, 1.0)]),
                segments: vec![],
            },
            MetricInput {
                name: "latency_p95".into(),
                role: MetricRole::Guardrail,
                data: MetricData::Quantile {
                    q: 0.95,
                    variants: vec![
                        QuantileSample::from_values((0..500).map(f64::from).collect()).unwrap(),
                        QuantileSample::from_values((0..500).map(|i| f64::from(i) * 1.2).collect())
                            .unwrap(),
                    ],
                },
                segments: vec![],
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
        // Family of two (revenue, p95 latency): Holm multiplies the smaller p by 2.
        let (p_rev, p_lat) = (
            secondary.p_value().unwrap(),
            r.metrics[3].comparisons[0].p_value().unwrap(),
        );
        assert!(
            (secondary.adjusted_p_value.unwrap() - (2.0 * p_rev.min(p_lat)).max(p_rev).min(1.0))
                .abs()
                < 1e-15
        );
        // Revenue is up overall but down in both segments (mix shift): Simpson's paradox.
        assert!(secondary.comparison.welch.unwrap().difference > 0.0);
        assert!(secondary.simpson.unwrap().flagged);
        assert!(secondary.warnings.contains(&Warning::SimpsonsParadox));
        let latency = &r.metrics[3];
        assert!(latency.quantiles.as_ref().unwrap()[0].is_some());
        let q = latency.comparisons[0].quantile.unwrap();
        assert!(
            (q.difference - 0.2 * 474.05).abs() < 1e-9,
            "{}",
            q.difference
        );
        assert!(q.p_value < 1e-3);
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
            segments: vec![],
        }];
        assert!(matches!(
            analyze(&AnalysisConfig::default(), &variants, &bad),
            Err(Error::LengthMismatch { .. })
        ));
        let ok = vec![MetricInput {
            name: "m".into(),
            role: MetricRole::Primary,
            data: MetricData::Mean(vec![mean(10, 1.0, 1.0), mean(10, 1.2, 1.0)]),
            segments: vec![],
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

    /// A secondary metric measured on fewer units than were exposed (a mean
    /// over the units with an event) has a smaller information fraction
    /// than the earlier looks: they are left out of its boundary, which is
    /// then the first look's, rather than failing the whole analysis.
    #[test]
    fn earlier_looks_above_a_metrics_own_fraction_are_left_out() {
        let variants: Vec<VariantInput> = ["c", "t"]
            .iter()
            .map(|n| VariantInput {
                name: (*n).into(),
                weight: 1.0,
                units: 1_000,
            })
            .collect();
        let inputs = vec![
            MetricInput {
                name: "conversion".into(),
                role: MetricRole::Primary,
                data: MetricData::Mean(vec![mean(1_000, 0.10, 0.09), mean(1_000, 0.12, 0.1)]),
                segments: vec![],
            },
            MetricInput {
                name: "order_value".into(),
                role: MetricRole::Secondary,
                data: MetricData::Mean(vec![mean(100, 50.0, 400.0), mean(120, 52.0, 400.0)]),
                segments: vec![],
            },
        ];
        let config = |previous: Vec<f64>| AnalysisConfig {
            planned_n_per_variant: Some(1_000),
            sequential: Some(SequentialConfig::GroupSequential {
                spending: Spending::OBrienFleming,
                previous_fractions: previous,
            }),
            ..AnalysisConfig::default()
        };
        let fractions = |r: &ExperimentReport| -> Vec<Vec<f64>> {
            r.metrics
                .iter()
                .map(|m| match &m.comparisons[0].sequential {
                    Some(SequentialOutcome::GroupSequential(g)) => {
                        g.looks.iter().map(|l| l.information_fraction).collect()
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let after = analyze(&config(vec![0.5, 0.8]), &variants, &inputs).unwrap();
        let first = analyze(&config(vec![]), &variants, &inputs).unwrap();
        // The primary counts every unit: its boundary follows both looks.
        assert_eq!(fractions(&after)[0], vec![0.5, 0.8, 1.0]);
        // order_value's 220 units are 0.11 of the plan, below both looks.
        assert_eq!(fractions(&after)[1], vec![0.11]);
        assert_eq!(
            after.metrics[1].comparisons[0].sequential,
            first.metrics[1].comparisons[0].sequential
        );
    }
}
