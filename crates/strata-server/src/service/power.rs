//! The power calculator: how many units an experiment needs to detect an
//! effect, the smallest effect a number of units can detect, and how many
//! days enrolling them takes at a daily traffic.
//!
//! The statistics are strata-stats' (`power`: the two-sided z-test of a
//! difference in means, exactly `statsmodels`' `NormalIndPower`, checked
//! against its reference values there); this module reads a request in the
//! API's terms, checks it field by field and renders the plan. The size is
//! per comparison of one treatment with the control at the given alpha: with
//! several treatments a caller who corrects for them passes the corrected
//! alpha.

use serde::{Deserialize, Serialize};
use strata_stats::power::{self, Baseline, Mde};
use utoipa::ToSchema;

use crate::auth::Perm;
use crate::service::permissions::authorize;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;

/// The kind of metric a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerMetric {
    /// A conversion (0/1 per unit) with a baseline rate.
    Binomial,
    /// A per-unit value with a baseline mean and variance.
    Continuous,
}

fn two() -> u32 {
    2
}
fn default_alpha() -> f64 {
    0.05
}
fn default_power() -> f64 {
    0.8
}
fn all() -> f64 {
    1.0
}

/// The body of `POST /api/v1/power`: the baseline, then either `mde` (the
/// units needed are computed) or `units_per_variant` (the detectable effect
/// is computed), and optionally the daily traffic (the duration is
/// computed).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `binomial` or `continuous`.
    pub metric: PowerMetric,
    /// Binomial: the control's conversion rate, in (0, 1).
    #[serde(default)]
    pub baseline_rate: Option<f64>,
    /// Continuous: the control's mean per unit.
    #[serde(default)]
    pub baseline_mean: Option<f64>,
    /// Continuous: the variance of the per-unit value, > 0.
    #[serde(default)]
    pub baseline_variance: Option<f64>,
    /// The relative effect to detect (0.02 = 2 % of the baseline).
    #[serde(default)]
    pub mde: Option<f64>,
    /// Instead of `mde`: the units each variant will have.
    #[serde(default)]
    pub units_per_variant: Option<u64>,
    /// Variants including the control (default 2).
    #[serde(default = "two")]
    pub variants: u32,
    /// Two-sided significance level (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Power (default 0.8).
    #[serde(default = "default_power")]
    pub power: f64,
    /// Eligible units per day; with it, the plan says how many days.
    #[serde(default)]
    pub daily_traffic: Option<f64>,
    /// Share of the eligible units that enter the experiment (default 1).
    #[serde(default = "all")]
    pub allocation: f64,
}

/// The detectable effect of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlannedEffect {
    /// Relative to the baseline (none when the baseline mean is 0).
    pub relative: Option<f64>,
    /// In the metric's unit (a rate difference for a binomial metric).
    pub absolute: f64,
    /// Standardised: the absolute effect over the per-unit standard deviation.
    pub effect_size: f64,
}

/// What a power calculation answers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PowerPlan {
    /// Variants including the control.
    pub variants: u32,
    /// Significance level used.
    pub alpha: f64,
    /// Power used.
    pub power: f64,
    /// Units each variant needs (or was given).
    pub units_per_variant: u64,
    /// Units across all variants.
    pub total_units: u64,
    /// The effect detectable with that many units at that power.
    pub mde: PlannedEffect,
    /// Days to enrol them at `daily_traffic` × `allocation`, when the
    /// traffic was given.
    pub days: Option<u64>,
}

fn invalid(field: &str, message: String) -> ServiceError {
    ServiceError::validation(field, message)
}

/// The request's field a strata-stats input corresponds to.
fn api_field(stats_field: &str) -> &str {
    match stats_field {
        "rate" => "baseline_rate",
        "mean" => "baseline_mean",
        "variance" => "baseline_variance",
        "n_per_variant" => "units_per_variant",
        other => other,
    }
}

fn stats_error(e: strata_stats::Error) -> ServiceError {
    match e {
        strata_stats::Error::OutOfRange {
            field,
            expected,
            value,
        } => invalid(
            api_field(field),
            format!("{} must be {expected}, got {value}", api_field(field)),
        ),
        strata_stats::Error::NonFinite { field, value } => invalid(
            api_field(field),
            format!("{} must be finite, got {value}", api_field(field)),
        ),
        other => ServiceError::validation("", other.to_string()),
    }
}

/// The baseline the request describes, checked against its metric kind.
fn baseline(req: &PowerRequest) -> Result<Baseline, ServiceError> {
    let given = |field: &str, v: Option<f64>| {
        v.ok_or_else(|| {
            invalid(
                field,
                format!("{field} is required for a {} metric", kind(req)),
            )
        })
    };
    let refused = |field: &str, v: Option<f64>| match v {
        Some(_) => Err(invalid(
            field,
            format!("{field} does not apply to a {} metric", kind(req)),
        )),
        None => Ok(()),
    };
    match req.metric {
        PowerMetric::Binomial => {
            refused("baseline_mean", req.baseline_mean)?;
            refused("baseline_variance", req.baseline_variance)?;
            Ok(Baseline::Rate {
                rate: given("baseline_rate", req.baseline_rate)?,
            })
        }
        PowerMetric::Continuous => {
            refused("baseline_rate", req.baseline_rate)?;
            Ok(Baseline::Mean {
                mean: given("baseline_mean", req.baseline_mean)?,
                variance: given("baseline_variance", req.baseline_variance)?,
            })
        }
    }
}

fn kind(req: &PowerRequest) -> &'static str {
    match req.metric {
        PowerMetric::Binomial => "binomial",
        PowerMetric::Continuous => "continuous",
    }
}

/// Computes the plan a request asks for.
pub fn plan(req: &PowerRequest) -> Result<PowerPlan, ServiceError> {
    let base = baseline(req)?;
    if !(2..=100).contains(&req.variants) {
        return Err(invalid(
            "variants",
            format!("variants must be between 2 and 100, got {}", req.variants),
        ));
    }
    let (units_per_variant, mde) = match (req.mde, req.units_per_variant) {
        (Some(mde), None) => {
            if !(mde.is_finite() && mde > 0.0) {
                return Err(invalid("mde", format!("mde must be positive, got {mde}")));
            }
            let n = power::sample_size(base, Mde::Relative(mde), req.alpha, req.power)
                .map_err(stats_error)?;
            let effect = PlannedEffect {
                relative: Some(mde),
                absolute: n.absolute_effect,
                effect_size: n.effect_size,
            };
            (n.per_variant, effect)
        }
        (None, Some(n)) => {
            if n == 0 {
                return Err(invalid(
                    "units_per_variant",
                    "units_per_variant must be positive, got 0".into(),
                ));
            }
            let e = power::minimum_detectable_effect(base, n as f64, req.alpha, req.power)
                .map_err(stats_error)?;
            let effect = PlannedEffect {
                relative: e.relative,
                absolute: e.absolute,
                effect_size: e.effect_size,
            };
            (n, effect)
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "units_per_variant",
                "give mde or units_per_variant, not both".into(),
            ))
        }
        (None, None) => {
            return Err(invalid(
                "mde",
                "give mde (to compute the units needed) or units_per_variant (to compute the detectable effect)".into(),
            ))
        }
    };
    let days = req
        .daily_traffic
        .map(|daily| power::duration_days(units_per_variant, req.variants, daily, req.allocation))
        .transpose()
        .map_err(stats_error)?;
    Ok(PowerPlan {
        variants: req.variants,
        alpha: req.alpha,
        power: req.power,
        units_per_variant,
        total_units: units_per_variant.saturating_mul(u64::from(req.variants)),
        mde,
        days,
    })
}

/// The power calculator as a service: any caller that may read.
#[derive(Debug, Clone)]
pub struct PowerService {
    state: AppState,
}

impl PowerService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The plan `req` asks for, for `actor` (`read`).
    pub async fn plan(&self, actor: &Actor, req: &PowerRequest) -> Result<PowerPlan, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        plan(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: serde_json::Value) -> PowerRequest {
        serde_json::from_value(body).unwrap()
    }

    // Reference values: statsmodels' NormalIndPower, from strata-stats'
    // fixtures (crates/strata-stats/tests/reference, case `rate_relative`:
    // rate 0.1, relative MDE 0.05, alpha 0.05, power 0.8 → 56,511.8 units
    // per variant; standardised MDE at 5,000 units 0.0560316357).
    #[test]
    fn units_for_an_effect_and_the_effect_of_a_number_of_units() {
        let p = plan(&req(serde_json::json!({
            "metric": "binomial", "baseline_rate": 0.1, "mde": 0.05,
            "daily_traffic": 10000, "allocation": 0.5
        })))
        .unwrap();
        assert_eq!((p.units_per_variant, p.total_units), (56_512, 113_024));
        assert!((p.mde.effect_size - 0.016_666_666_666_666_666).abs() < 1e-12);
        assert!((p.mde.absolute - 0.005).abs() < 1e-12);
        // 113,024 units at 5,000 a day.
        assert_eq!(p.days, Some(23));
        let p = plan(&req(serde_json::json!({
            "metric": "binomial", "baseline_rate": 0.1, "units_per_variant": 5000
        })))
        .unwrap();
        assert!((p.mde.effect_size - 0.056_031_635_740_271_58).abs() < 1e-9);
        // σ = √(0.1 · 0.9) = 0.3; relative to the 0.1 baseline.
        assert!((p.mde.absolute - 0.056_031_635_740_271_58 * 0.3).abs() < 1e-9);
        assert!((p.mde.relative.unwrap() - 0.056_031_635_740_271_58 * 3.0).abs() < 1e-9);
        assert_eq!(p.days, None);
    }

    #[test]
    fn more_variants_need_more_units_in_all_not_per_comparison() {
        let body = |k: u32| {
            req(serde_json::json!({
                "metric": "continuous", "baseline_mean": 52.3, "baseline_variance": 410.0,
                "mde": 0.02, "power": 0.9, "variants": k
            }))
        };
        // statsmodels: 7,874.93 per variant (case `mean_relative`).
        let two = plan(&body(2)).unwrap();
        let three = plan(&body(3)).unwrap();
        assert_eq!(two.units_per_variant, 7_875);
        assert_eq!(three.units_per_variant, 7_875);
        assert_eq!(three.total_units, 3 * 7_875);
    }

    #[test]
    fn bad_requests_name_their_field() {
        let cases = [
            (
                serde_json::json!({"metric": "binomial", "mde": 0.05}),
                "baseline_rate",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 1.5, "mde": 0.05}),
                "baseline_rate",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1, "baseline_mean": 3, "mde": 0.05}),
                "baseline_mean",
            ),
            (
                serde_json::json!({"metric": "continuous", "baseline_mean": 1, "baseline_variance": 0, "mde": 0.05}),
                "baseline_variance",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1}),
                "mde",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1, "mde": 0.05, "units_per_variant": 10}),
                "units_per_variant",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1, "mde": 0.05, "power": 1.2}),
                "power",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1, "mde": 0.05, "variants": 1}),
                "variants",
            ),
            (
                serde_json::json!({"metric": "binomial", "baseline_rate": 0.1, "mde": 0.05, "daily_traffic": 100, "allocation": 0}),
                "allocation",
            ),
        ];
        for (body, field) in cases {
            match plan(&req(body.clone())) {
                Err(ServiceError::Validation { field: f, message }) => {
                    assert_eq!(f, field, "{body}: {message}");
                    assert!(
                        message.starts_with(field) || message.starts_with("give"),
                        "{message}"
                    );
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
