//! The global holdout's look: everything shipped, measured against units
//! that saw none of it (`docs/statistics.md`, "Global holdout").
//!
//! Held-out units log a holdout exposure (`variant` holdout) and so does
//! every other unit evaluated on a surface with an experiment respecting the
//! holdout (`variant` rest; assignment spec section 11). A look at a period
//! of the holdout is an ordinary analysis of that pseudo-experiment — the
//! holdout as control, the rest as treatment, weighted by the holdout's
//! percent so the sample ratio check tests its size — on the
//! organisation's key metrics, over the exposures of the period only (a
//! new salt moves units in and out of the holdout, so earlier exposures
//! belong to an earlier period), with CUPED on the weeks before the period.
//! It adds one health check, that no held-out unit saw a treatment.

use chrono::{DateTime, SecondsFormat, Utc};
use strata_model::holdout::Contamination;

use crate::engine::{Analyzer, DataSource, EngineOptions};
use crate::error::{Error, Result};
use crate::metrics::MetricRegistry;
use crate::results::Results;
use crate::spec::{AnalysisSpec, ValidSpec, VariantSpec};

/// Length of the CUPED pre-period of a holdout look, in days.
pub const CUPED_DAYS: u32 = 14;

/// One look at a period of the holdout.
#[derive(Debug, Clone)]
pub struct HoldoutLookInput {
    /// The experiment key of holdout exposures (`$holdout`).
    pub experiment: String,
    /// The variant of held-out units (`holdout`), the control.
    pub holdout: String,
    /// The variant of every other unit (`rest`).
    pub rest: String,
    /// The share held out during the period, percent (0 < p < 100).
    pub percent: f64,
    /// The organisation's key metrics, the first the primary.
    pub key_metrics: Vec<String>,
    /// The start of the period.
    pub start: DateTime<Utc>,
    /// Its end: when it ended, or the time of the look.
    pub end: DateTime<Utc>,
    /// The `(experiment, variant)` treatments of the experiments
    /// respecting the holdout, which no held-out unit may see.
    pub treatments: Vec<(String, String)>,
}

impl HoldoutLookInput {
    /// The analysis spec of the look, checked against `registry`.
    pub fn spec(&self, registry: &MetricRegistry) -> Result<ValidSpec> {
        let doc = "the global holdout";
        if !(self.percent > 0.0 && self.percent < 100.0) {
            return Err(Error::invalid(
                doc,
                "percent",
                format!(
                    "a holdout of {}% leaves nothing to compare (0 < percent < 100)",
                    self.percent
                ),
            ));
        }
        let Some((primary, secondary)) = self.key_metrics.split_first() else {
            return Err(Error::invalid(
                doc,
                "key_metrics",
                "no key metrics are set (PUT /api/v1/key-metrics)",
            ));
        };
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        AnalysisSpec {
            key: self.experiment.clone(),
            control: self.holdout.clone(),
            variants: vec![
                VariantSpec {
                    key: self.holdout.clone(),
                    weight: self.percent,
                },
                VariantSpec {
                    key: self.rest.clone(),
                    weight: 100.0 - self.percent,
                },
            ],
            start: time(self.start),
            end: time(self.end),
            primary: primary.clone(),
            secondary: secondary.to_vec(),
            guardrails: Vec::new(),
            alpha: crate::spec::default_alpha(),
            power: None,
            mde: None,
            planned_units: None,
            sequential: strata_model::SequentialMethod::None,
            cuped: Some(strata_model::CupedSpec {
                pre_period_days: CUPED_DAYS,
            }),
            segments: Vec::new(),
            srm_alpha: crate::spec::default_srm_alpha(),
            multiple_testing: strata_model::MultipleTesting::default(),
            analysis: strata_model::AnalysisMode::Itt,
            clock_skew_seconds: 0.0,
            novelty_days: crate::spec::default_novelty_days(),
            min_duration_days: strata_model::plan::default_min_duration_days(),
            bayesian: false,
            exposures_since_start: true,
        }
        .validate(doc, registry)
    }
}

/// Analyses a period of the holdout over `data` and checks that no
/// held-out unit saw a treatment: the results (with the
/// `holdout_contamination` check among their health checks, and no
/// decision — a holdout is not shipped or rolled back) and the
/// contamination found.
pub async fn look(
    input: &HoldoutLookInput,
    registry: &MetricRegistry,
    data: &DataSource,
    options: EngineOptions,
) -> Result<(Results, Contamination)> {
    let spec = input.spec(registry)?;
    let analyzer = Analyzer::new(spec, registry, data, options).await?;
    let mut results = analyzer.run(None).await?;
    let contamination = analyzer
        .holdout_contamination(None, &input.treatments)
        .await?;
    results
        .health
        .push(crate::health::holdout_contamination(&contamination));
    results.decision = None;
    Ok((results, contamination))
}
