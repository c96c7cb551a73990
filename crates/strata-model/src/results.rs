//! The results document (`docs/results-schema.md`, `docs/results.schema.json`):
//! what the analysis engine writes and the control plane stores when it is
//! published. Serde types only; the JSON they serialise to is the schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The analysis of one experiment at one point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Experiment key.
    pub experiment: String,
    /// End of the data analysed: `min(end, --as-of)` (RFC 3339).
    pub as_of: String,
    /// Start of the experiment (RFC 3339).
    pub start: String,
    /// `itt` or `per_protocol`.
    pub analysis: String,
    /// Units per variant, in the analysis.
    pub units: BTreeMap<String, u64>,
    /// Units left out by the heuristic bot detection, per variant (absent
    /// in documents written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_exclusion: Option<BotExclusion>,
    /// Sample ratio mismatch check.
    pub srm: Srm,
    /// Metrics: primary, secondary, guardrails, in spec order.
    pub metrics: Vec<MetricResult>,
    /// Per segment attribute: breakdowns and Simpson's paradox checks.
    pub segments: BTreeMap<String, SegmentReport>,
    /// Novelty report of the primary metric (absent for ratio and quantile primaries).
    pub novelty: Option<Novelty>,
    /// Data-quality and interpretation warnings.
    pub warnings: Vec<Warning>,
    /// Health checks of this look: whether its numbers can be trusted
    /// (empty in documents written before they existed).
    #[serde(default)]
    pub health: Vec<HealthCheck>,
    /// What the look supports doing, with its reasons (absent in documents
    /// written before decisions existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The figures of a look a trend chart needs, kept with each published look
/// so that an experiment's history is read without its documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookSummary {
    /// The decision's verdict (none in documents without one).
    pub verdict: Option<Verdict>,
    /// The worst status among the health checks (none without checks).
    pub health: Option<HealthStatus>,
    /// Units in the analysis, all variants.
    pub units: u64,
    /// The primary metric's effects, one per treatment.
    pub primary: Vec<SummaryEffect>,
}

/// One treatment's effect on the primary metric, in a [`LookSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryEffect {
    /// Treatment variant.
    pub variant: String,
    /// Treatment − control.
    pub delta: Option<f64>,
    /// Interval of `delta`.
    pub ci: Option<[f64; 2]>,
    /// Relative lift.
    pub relative: Option<f64>,
    /// p-value.
    pub p_value: Option<f64>,
    /// Whether it is significant (the sequential decision, when there is one).
    pub significant: bool,
    /// The group-sequential boundary of this look in the units of `delta`
    /// (`±boundary × standard error`): the effect had to leave it to be
    /// significant. Absent without a group-sequential test and in looks
    /// published before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<[f64; 2]>,
}

impl Results {
    /// This look's [`LookSummary`].
    pub fn summary(&self) -> LookSummary {
        LookSummary {
            verdict: self.decision.as_ref().map(|d| d.verdict),
            health: self.health.iter().map(|c| c.status).max(),
            units: self.units.values().sum(),
            primary: self
                .metrics
                .iter()
                .find(|m| m.role == "primary")
                .map(|m| {
                    m.effects
                        .iter()
                        .map(|e| SummaryEffect {
                            variant: e.variant.clone(),
                            delta: e.delta,
                            ci: e.ci,
                            relative: e.relative,
                            p_value: e.p_value,
                            significant: e.significant,
                            boundary: e
                                .sequential
                                .as_ref()
                                .and_then(|q| effect_boundary(e.delta, q)),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The information fractions of this look and the looks before it, in
    /// order, from its primary metric's group-sequential block (empty
    /// without one): what the next look's boundary must account for.
    pub fn sequential_fractions(&self) -> Vec<f64> {
        let Some(s) = self
            .metrics
            .iter()
            .find(|m| m.role == "primary")
            .and_then(|m| m.effects.first())
            .and_then(|e| e.sequential.as_ref())
        else {
            return Vec::new();
        };
        let mut out = s.previous_fractions.clone();
        out.extend(s.information_fraction);
        out
    }
}

/// A group-sequential boundary in the units of the effect: the test
/// statistic is `delta / se`, so `|z| ≥ b` is `|delta| ≥ b × se` with
/// `se = delta / z` (none when `z` is zero or a figure is missing).
fn effect_boundary(delta: Option<f64>, s: &Sequential) -> Option<[f64; 2]> {
    if s.method != "group_sequential" {
        return None;
    }
    let (d, z, b) = (delta?, s.z?, s.boundary?);
    let se = d / z;
    (z != 0.0 && se.is_finite() && se > 0.0 && b.is_finite()).then(|| [-b * se, b * se])
}

/// How a health check came out, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Nothing wrong found.
    Ok,
    /// Something to look at; the numbers may still be used, but no `ship`.
    Warn,
    /// The numbers are not to be trusted.
    Fail,
}

impl HealthStatus {
    /// The name in documents (`ok`, `warn`, `fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Warn => "warn",
            HealthStatus::Fail => "fail",
        }
    }
}

/// The health checks every look carries, in order.
pub const HEALTH_CHECKS: [&str; 9] = [
    "srm",
    "multiple_exposures",
    "pre_exposure_bias",
    "missing_data",
    "minimum_duration",
    "underpowered",
    "novelty",
    "simpsons_paradox",
    "bot_exclusion",
];

/// The units the heuristic bot detection left out of a look: exposed
/// units whose activity went over a limit of the registry's
/// `bot_detection` (`docs/data-model.md`, *Bots*). They are in no metric
/// and in no count of [`Results::units`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotExclusion {
    /// Whether the detection ran (`false`: turned off, nothing left out
    /// beyond events and exposures flagged `is_bot`).
    pub enabled: bool,
    /// Units left out, per variant of the spec (0 when none).
    pub excluded: BTreeMap<String, u64>,
    /// Share of each variant's exposed units left out:
    /// `excluded / (units + excluded)` (0 for a variant without units).
    pub share: BTreeMap<String, f64>,
}

/// One health check of a look (`docs/results-schema.md` lists them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Which check, one of [`HEALTH_CHECKS`].
    pub check: String,
    /// Its outcome.
    pub status: HealthStatus,
    /// The figures it was decided on (p-values, shares, days, units).
    pub figures: BTreeMap<String, f64>,
    /// What it found, in a sentence a product manager understands.
    pub message: String,
}

/// What a look supports doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The primary metric improved significantly, no guardrail metric got
    /// significantly worse, every health check is ok and the minimum
    /// duration is reached.
    Ship,
    /// The primary or a guardrail metric got significantly worse.
    RollBack,
    /// Not enough evidence yet either way.
    KeepRunning,
    /// A health check failed: the numbers are not to be trusted.
    Unhealthy,
}

impl Verdict {
    /// The name in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ship => "ship",
            Verdict::RollBack => "roll_back",
            Verdict::KeepRunning => "keep_running",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// The decision of a look, with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What the look supports.
    pub verdict: Verdict,
    /// The treatment to ship (`ship`) or the one that did harm
    /// (`roll_back`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Why, one sentence each, most important first.
    pub reasons: Vec<String>,
    /// `keep_running`: days until the planned units are reached at the
    /// observed daily traffic (0 when they are), when it can be estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<f64>,
}

/// Bayesian summary of one comparison (experiments with `bayesian: true`),
/// under a flat prior and the normal approximation: descriptive only, the
/// decision rules are the frequentist ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bayesian {
    /// Posterior mean of treatment − control.
    pub posterior_mean: f64,
    /// Posterior standard deviation of treatment − control.
    pub posterior_std_dev: f64,
    /// Probability that the treatment is better, in the metric's direction
    /// (for a metric where an increase is bad: the probability that it is
    /// lower).
    pub prob_treatment_better: f64,
    /// Expected loss of choosing the treatment, in the metric's units and
    /// direction: how much worse it is expected to be, counting only the
    /// outcomes where it is worse.
    pub expected_loss_treatment: f64,
    /// Expected loss of keeping the control, likewise.
    pub expected_loss_control: f64,
}

/// Sample ratio mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Srm {
    /// Pearson χ² statistic.
    pub chi2: f64,
    /// Degrees of freedom.
    pub df: u32,
    /// p-value.
    pub p_value: f64,
    /// True when `p_value < srm_alpha`.
    pub flagged: bool,
    /// Observed units per variant.
    pub observed: BTreeMap<String, u64>,
    /// Expected units per variant under the configured weights.
    pub expected: BTreeMap<String, f64>,
}

/// Results of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// Metric key.
    pub metric: String,
    /// `primary`, `secondary` or `guardrail`.
    pub role: String,
    /// Metric type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `increase_is_good` or `increase_is_bad`.
    pub direction: String,
    /// Probability level, for quantile metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Winsorizing cap applied to per-unit values (ratio: numerator, denominator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winsorize_caps: Option<Vec<f64>>,
    /// Per-variant summaries.
    pub variants: BTreeMap<String, VariantResult>,
    /// Each treatment against the control.
    pub effects: Vec<Effect>,
}

/// One variant of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    /// Units (mean metrics: units with matching events; quantile metrics: events).
    pub n: u64,
    /// Mean of the per-unit values (ratio: Σnum/Σden); raw, not CUPED-adjusted.
    pub mean: Option<f64>,
    /// Sample variance of the per-unit values (ratio: delta-method variance × n).
    pub variance: Option<f64>,
    /// CUPED-adjusted mean, when CUPED applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuped_mean: Option<f64>,
    /// The quantile, for quantile metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Distribution-free interval of the quantile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<[f64; 2]>,
}

/// An effect without adjustments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unadjusted {
    /// Treatment − control.
    pub delta: Option<f64>,
    /// Interval of `delta`.
    pub ci: Option<[f64; 2]>,
    /// p-value.
    pub p_value: Option<f64>,
}

/// CUPED details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CupedInfo {
    /// Pooled θ.
    pub theta: f64,
    /// `1 − var(y')/var(y)`, pooled.
    pub variance_reduction: Option<f64>,
}

/// Sequential outcome of the primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequential {
    /// `group_sequential` or `always_valid`.
    pub method: String,
    /// Information fraction of this look (group-sequential).
    pub information_fraction: Option<f64>,
    /// Information fractions of the earlier looks the boundary accounts for
    /// (group-sequential), in order; the next look adds this one's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_fractions: Vec<f64>,
    /// Test statistic (group-sequential: normal deviate).
    pub z: Option<f64>,
    /// Boundary at this look (group-sequential).
    pub boundary: Option<f64>,
    /// Always-valid interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<[f64; 2]>,
    /// Always-valid p-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// `significant`, `continue` or `not_significant` (final look), or `insufficient_data`.
    pub decision: String,
}

/// One treatment against the control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Treatment variant.
    pub variant: String,
    /// Control variant.
    pub control: String,
    /// Treatment − control (CUPED-adjusted when CUPED applies).
    pub delta: Option<f64>,
    /// Interval of `delta` at level 1 − α.
    pub ci: Option<[f64; 2]>,
    /// Relative lift `treatment/control − 1`.
    pub relative: Option<f64>,
    /// Interval of `relative`.
    pub relative_ci: Option<[f64; 2]>,
    /// Unadjusted (for multiplicity) p-value.
    pub p_value: Option<f64>,
    /// Multiplicity-adjusted p-value (non-primary metrics).
    pub adjusted_p_value: Option<f64>,
    /// Decision at level α (primary: `p_value` or the sequential decision; others: `adjusted_p_value`).
    pub significant: bool,
    /// `high`, `moderate` or `not_significant`.
    pub tier: String,
    /// CUPED details, when CUPED applies.
    pub cuped: Option<CupedInfo>,
    /// The effect before CUPED, when CUPED applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unadjusted: Option<Unadjusted>,
    /// Sequential outcome (primary metric, when configured).
    pub sequential: Option<Sequential>,
    /// Bayesian summary (experiments with `bayesian: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bayesian: Option<Bayesian>,
    /// Why no test was possible, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insufficient_data: Option<String>,
    /// Warnings of this comparison (`srm`, `underpowered`, `borderline`, ...).
    pub warnings: Vec<String>,
}

/// Breakdown of every metric by one segment attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    /// Per segment value: per metric, per variant `n` and `mean`.
    pub values: BTreeMap<String, BTreeMap<String, BTreeMap<String, SegmentCell>>>,
    /// Per metric, per treatment: Simpson's paradox check.
    pub simpson: BTreeMap<String, BTreeMap<String, Simpson>>,
}

/// A metric in one segment and variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentCell {
    /// Units.
    pub n: u64,
    /// Mean (ratio: Σnum/Σden).
    pub mean: Option<f64>,
}

/// Simpson's paradox check of one comparison over one segment attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simpson {
    /// Segments large enough to count.
    pub eligible_segments: usize,
    /// Of those, segments whose effect has the opposite sign of the aggregate.
    pub opposite_segments: usize,
    /// Most eligible segments disagree with the aggregate.
    pub flagged: bool,
}

/// The primary effect early and late in units' exposure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    /// Primary metric.
    pub metric: String,
    /// Early window: `[first exposure, first exposure + window_days)`.
    pub window_days: u32,
    /// Per treatment.
    pub effects: Vec<NoveltyEffect>,
}

/// Early and late effect of one treatment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoveltyEffect {
    /// Treatment.
    pub variant: String,
    /// Effect over every unit's early window.
    pub early: WindowEffect,
    /// Effect over the late window of units exposed at least `window_days` before the end.
    pub late: WindowEffect,
    /// Two-sided p-value of early − late (normal approximation).
    pub decay_p_value: Option<f64>,
    /// Early effect significant, late effect smaller in magnitude, and the difference significant.
    pub flagged: bool,
}

/// A Welch comparison within a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEffect {
    /// Units in control and treatment.
    pub n: [u64; 2],
    /// Treatment − control.
    pub delta: Option<f64>,
    /// Interval of `delta`.
    pub ci: Option<[f64; 2]>,
    /// p-value.
    pub p_value: Option<f64>,
}

/// A warning about the data or its interpretation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// Machine-readable code.
    pub code: String,
    /// How many units (or comparisons) it concerns, when it counts something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Human-readable explanation.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_of_a_look_is_its_earlier_fractions_then_its_own() {
        let mut r: Results = serde_json::from_value(serde_json::json!({
            "experiment": "e", "as_of": "2026-01-02T00:00:00Z", "start": "2026-01-01T00:00:00Z",
            "analysis": "itt", "units": {}, "segments": {}, "novelty": null, "warnings": [],
            "srm": {"chi2": 0.0, "df": 1, "p_value": 1.0, "flagged": false, "observed": {}, "expected": {}},
            "metrics": [{"metric": "m", "role": "primary", "type": "mean", "direction": "increase_is_good",
                "variants": {}, "effects": [{"variant": "t", "control": "c", "delta": null, "ci": null,
                "relative": null, "relative_ci": null, "p_value": null, "adjusted_p_value": null,
                "significant": false, "tier": "not_significant", "cuped": null, "warnings": [],
                "sequential": {"method": "group_sequential", "information_fraction": 0.5,
                    "previous_fractions": [0.2, 0.3], "z": 1.0, "boundary": 3.0, "decision": "continue"}}]}]
        }))
        .unwrap();
        assert!(
            r.health.is_empty() && r.decision.is_none(),
            "older documents read"
        );
        assert_eq!(r.sequential_fractions(), [0.2, 0.3, 0.5]);
        let summary = r.summary();
        assert_eq!(
            (summary.verdict, summary.health, summary.units),
            (None, None, 0)
        );
        assert_eq!(summary.primary.len(), 1);
        assert_eq!(summary.primary[0].variant, "t");
        r.metrics[0].effects[0].sequential = None;
        assert!(r.sequential_fractions().is_empty());
    }
}
