//! One evaluation of a guardrail on one experiment: gates, the always-valid
//! test of every treatment, and the action — a pure function of its inputs.
//!
//! The guardrail monitor (a background job of the composition root) gathers
//! an [`EvaluationInput`] — the definition, the experiment's facts, the
//! per-variant statistics over the guardrail's window, the pipeline's lag
//! and each user partition's freshness — and calls [`evaluate`]. The input
//! and the [`Evaluation`] are stored together, so any recorded evaluation
//! can be replayed (`POST …/guardrails/evaluations/{id}/replay`) and must
//! give the same decision: every kill can be audited from what it saw.
//!
//! # Gates (seed Part 9: never act on incomplete data)
//! Every gate is checked and recorded, in this order; the first that fails
//! skips the evaluation (no decision, no action) and is named as the reason:
//!
//! 0. `data` — the guardrail's metric could be computed from the pipeline's
//!    data (a failed query decides nothing).
//! 1. `activation` — the experiment's current version has reached the SDK
//!    instances (see [`crate::activation`]); its data before is thin and
//!    lopsided.
//! 2. `age` — at least `min_age_minutes` since activation.
//! 3. `pipeline_lag` — the oldest record acknowledged but not yet visible
//!    to the monitor is at most [`MAX_PIPELINE_LAG_SECONDS`] old.
//! 4. `partitions` — every user partition has data up to the window's end.
//!    A partition is *behind* when its latest event is more than
//!    [`PARTITION_SLACK_SECONDS`] older than the freshest partition's and,
//!    at the average partition's event rate over the last
//!    [`FRESHNESS_LOOKBACK_MINUTES`] minutes, at least
//!    [`PARTITION_EXPECTED_EVENTS`] events should have arrived in that gap
//!    (a Poisson count with that mean is zero with probability e⁻¹⁰ ≈
//!    5·10⁻⁵, so a quiet partition of a low-traffic pipeline is not taken
//!    for a stalled one). A lull of all partitions together is not a
//!    partition behind. Partitions are a hash independent of assignment,
//!    but a stalled one still removes a random slice of units' recent
//!    events, and the two arms' slices differ by chance: skip, never kill.
//! 5. `min_samples` — every variant has at least `min_samples` units whose
//!    window has elapsed (and two, for a variance).
//! 6. `event_volume` — every variant's events per exposed unit are at least
//!    [`VOLUME_FLOOR`] of the other variants' (all event types together):
//!    a variant whose events have not arrived is incomplete data, not a
//!    regression. The share is loose on purpose — a real regression of one
//!    metric barely moves a unit's total event volume, a missing stream
//!    halves it or worse.
//! 7. `srm` — the exposed units per variant match the weights (χ² p-value
//!    at least [`SRM_ALPHA`]); with a sample ratio mismatch the comparison
//!    itself is invalid: alert, don't kill.
//!
//! # Decision and action
//! Each treatment is tested against control with
//! [`strata_stats::guardrail::guardrail_test`] at its share of the
//! experiment's error budget ([`strata_stats::guardrail::split_alpha`] over
//! the experiment's monitored guardrails and its treatments), tuned to the
//! experiment's planned units. A breach of any treatment is the guardrail's
//! breach. The action is the guardrail's `auto_action` (`kill`, `pause`,
//! `alert`), except that an experiment with `requires_approval` is never
//! killed or paused by the monitor unless the guardrail says `force`: its
//! breach is `await_approval` — an alert, and a person confirms or dismisses
//! it.

use serde::{Deserialize, Serialize};
use strata_model::{AutoAction, GuardrailDef, GuardrailDirection};
use strata_stats::guardrail::{
    guardrail_test, split_alpha, Direction, GuardrailDecision, GuardrailResult, Threshold,
};
use strata_stats::sequential::MixtureTuning;
use strata_stats::Sample;

/// Most seconds the oldest acknowledged record may wait to become visible.
pub const MAX_PIPELINE_LAG_SECONDS: f64 = 60.0;
/// A partition silent for less than this is never called behind.
pub const PARTITION_SLACK_SECONDS: f64 = 60.0;
/// Events a partition should have received in its silence to be behind.
pub const PARTITION_EXPECTED_EVENTS: f64 = 10.0;
/// The span over which partitions' event rates are measured.
pub const FRESHNESS_LOOKBACK_MINUTES: i64 = 60;
/// A variant's events per exposed unit below this share of the others' is
/// incomplete data.
pub const VOLUME_FLOOR: f64 = 0.5;
/// The sample-ratio-mismatch gate's χ² threshold.
pub const SRM_ALPHA: f64 = 0.001;

/// One variant's facts at the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariantFacts {
    /// Variant key.
    pub key: String,
    /// Its traffic weight.
    pub weight: f64,
    /// Units first exposed since activation.
    pub exposed: u64,
    /// Their events (every type) since their exposure.
    pub events: u64,
    /// Units whose guardrail window has elapsed: the sample.
    pub n: u64,
    /// The metric's mean over them.
    pub mean: f64,
    /// The per-unit sample variance (delta-method for a ratio).
    pub variance: f64,
}

/// One user partition's freshness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionFacts {
    /// The partition (`part=` value).
    pub part: String,
    /// Its events over the lookback.
    pub events: u64,
    /// Seconds since its latest event (the lookback when it has none).
    pub silent_seconds: f64,
}

/// Everything one evaluation reads: stored with it, so it can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvaluationInput {
    /// The experiment.
    pub experiment: String,
    /// The guardrail as evaluated.
    #[schema(value_type = Object)]
    pub guardrail: GuardrailDef,
    /// Whether the experiment requires approval (no automatic kill).
    pub requires_approval: bool,
    /// The control variant's key.
    pub control: String,
    /// The experiment's error budget for kills (`--guardrail-alpha`).
    pub budget: f64,
    /// The experiment's monitored guardrails, sharing the budget.
    pub guardrails: usize,
    /// The experiment's planned units (tunes the test).
    pub planned_units: u64,
    /// The experiment's config version (of its last change) when evaluated.
    pub config_version: u64,
    /// When the data was read (RFC 3339): the window's end.
    pub cutoff: String,
    /// When the experiment's version became active; none while activating.
    pub activated_at: Option<String>,
    /// Minutes from activation to the cutoff.
    pub age_minutes: f64,
    /// Age of the oldest record not yet visible, in seconds.
    pub pipeline_lag_seconds: f64,
    /// The user partitions the pipeline writes, with their freshness.
    pub partitions: Vec<PartitionFacts>,
    /// How many partitions the pipeline has (those without events are
    /// silent for the whole lookback).
    pub partition_count: u32,
    /// The variants, control included.
    pub variants: Vec<VariantFacts>,
    /// Why the metric could not be computed, if it could not.
    pub data_error: Option<String>,
}

/// One gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gate {
    /// `data`, `activation`, `age`, `pipeline_lag`, `partitions`,
    /// `min_samples`, `event_volume` or `srm`.
    pub gate: String,
    /// Whether it let the evaluation through.
    pub passed: bool,
    /// What it measured, in words.
    pub detail: String,
}

/// One treatment's test against control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreatmentCheck {
    /// The treatment.
    pub treatment: String,
    /// The test (harm, its bound, the boundary, the decision).
    #[schema(value_type = Object)]
    pub test: GuardrailResult,
}

/// The evaluation's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A gate stopped it.
    Skipped,
    /// Some treatment is worse than control by more than the threshold.
    Breach,
    /// No treatment is shown to be.
    NoBreach,
    /// The data cannot support the test yet (no variance, no baseline).
    Insufficient,
}

impl Outcome {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Breach => "breach",
            Outcome::NoBreach => "no_breach",
            Outcome::Insufficient => "insufficient",
        }
    }
}

/// What the monitor does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing.
    None,
    /// Kill the experiment.
    Kill,
    /// Pause it.
    Pause,
    /// Alert only (the guardrail's action).
    Alert,
    /// Alert and wait for a person to confirm or dismiss (an experiment
    /// requiring approval, a guardrail without `force`).
    AwaitApproval,
}

impl Action {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Alert => "alert",
            Action::AwaitApproval => "await_approval",
        }
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evaluation {
    /// Every gate, in order.
    pub gates: Vec<Gate>,
    /// The gate that skipped it, if one did.
    pub skipped_by: Option<String>,
    /// The level of each treatment's test (the budget's share).
    pub alpha: Option<f64>,
    /// The tests, one per treatment (none when skipped or not testable).
    pub checks: Vec<TreatmentCheck>,
    /// The outcome.
    pub outcome: Outcome,
    /// The action it calls for.
    pub action: Action,
    /// Why the test could not run, when the inputs were invalid for it.
    pub error: Option<String>,
}

impl Evaluation {
    /// The breaching treatment's check with the largest lower bound.
    pub fn worst(&self) -> Option<&TreatmentCheck> {
        self.checks
            .iter()
            .filter(|c| c.test.is_breach())
            .max_by(|a, b| {
                let (x, y) = (a.test.lower_bound, b.test.lower_bound);
                x.unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&y.unwrap_or(f64::NEG_INFINITY))
            })
    }
}

fn gate(name: &str, passed: bool, detail: String) -> Gate {
    Gate {
        gate: name.to_owned(),
        passed,
        detail,
    }
}

/// The gates of `input`, in order.
pub fn gates(input: &EvaluationInput) -> Vec<Gate> {
    let g = &input.guardrail;
    let mut out = Vec::with_capacity(8);
    out.push(match &input.data_error {
        None => gate("data", true, "the metric was computed".to_owned()),
        Some(e) => gate(
            "data",
            false,
            format!("the metric could not be computed: {e}"),
        ),
    });
    out.push(match &input.activated_at {
        Some(at) => gate("activation", true, format!("active since {at}")),
        None => gate(
            "activation",
            false,
            "the experiment's version has not reached 95 % of the SDK instances yet".to_owned(),
        ),
    });
    out.push(gate(
        "age",
        input.activated_at.is_some() && input.age_minutes >= f64::from(g.min_age_minutes),
        format!(
            "{:.1} minutes since activation, {} required",
            input.age_minutes.max(0.0),
            g.min_age_minutes
        ),
    ));
    out.push(lag_gate(input.pipeline_lag_seconds));
    out.push(partitions_gate(&input.partitions, input.partition_count));
    out.push(samples_gate(input));
    out.push(volume_gate(input));
    out.push(srm_gate(input));
    out
}

/// The `pipeline_lag` gate: is the oldest record not yet visible at most
/// [`MAX_PIPELINE_LAG_SECONDS`] old?
pub fn lag_gate(lag_seconds: f64) -> Gate {
    gate(
        "pipeline_lag",
        lag_seconds <= MAX_PIPELINE_LAG_SECONDS,
        format!(
            "the oldest record not yet visible is {lag_seconds:.1} s old, at most {MAX_PIPELINE_LAG_SECONDS} s allowed"
        ),
    )
}

/// The `partitions` gate over the freshness of the pipeline's `count`
/// user partitions (see the module documentation).
pub fn partitions_gate(partitions: &[PartitionFacts], count: u32) -> Gate {
    let lookback = (FRESHNESS_LOOKBACK_MINUTES * 60) as f64;
    let count = count.max(partitions.len() as u32).max(1);
    let total: u64 = partitions.iter().map(|p| p.events).sum();
    let rate = total as f64 / (f64::from(count) * lookback);
    // Behind the freshest partition: a lull of the whole traffic is not a
    // partition's problem (and, partitions being independent of variants,
    // biases no comparison); one partition falling silent is.
    let freshest = partitions
        .iter()
        .map(|p| p.silent_seconds.min(lookback))
        .fold(lookback, f64::min);
    let behind_by = |silent: f64| silent.min(lookback) - freshest;
    let silent = |s: f64| {
        let gap = behind_by(s);
        gap > PARTITION_SLACK_SECONDS && rate * gap >= PARTITION_EXPECTED_EVENTS
    };
    let mut behind: Vec<String> = partitions
        .iter()
        .filter(|p| silent(p.silent_seconds))
        .map(|p| format!("{} (silent {:.0} s)", p.part, p.silent_seconds))
        .collect();
    let missing = count as usize - partitions.len().min(count as usize);
    if missing > 0 && silent(lookback) {
        behind.push(format!("{missing} partition(s) without any event"));
    }
    let expected = format!(
        "{:.2} events per partition per minute over the last {FRESHNESS_LOOKBACK_MINUTES} minutes",
        rate * 60.0
    );
    if behind.is_empty() {
        gate(
            "partitions",
            true,
            format!("every partition is up to date ({expected})"),
        )
    } else {
        gate(
            "partitions",
            false,
            format!(
                "partitions behind: {} ({expected}); data of their units is incomplete",
                behind.join(", ")
            ),
        )
    }
}

fn samples_gate(input: &EvaluationInput) -> Gate {
    let need = input.guardrail.min_samples.max(2);
    let short: Vec<String> = input
        .variants
        .iter()
        .filter(|v| v.n < need)
        .map(|v| format!("{} has {}", v.key, v.n))
        .collect();
    if short.is_empty() {
        gate(
            "min_samples",
            true,
            format!("every variant has at least {need} units past the window"),
        )
    } else {
        gate(
            "min_samples",
            false,
            format!(
                "{need} units past the window needed per variant: {}",
                short.join(", ")
            ),
        )
    }
}

fn volume_gate(input: &EvaluationInput) -> Gate {
    let rate = |v: &VariantFacts| v.events as f64 / v.exposed as f64;
    let mut low = Vec::new();
    for v in input.variants.iter().filter(|v| v.exposed > 0) {
        let (events, exposed) = input
            .variants
            .iter()
            .filter(|o| o.key != v.key)
            .fold((0u64, 0u64), |(e, x), o| (e + o.events, x + o.exposed));
        if exposed == 0 || events == 0 {
            continue;
        }
        let others = events as f64 / exposed as f64;
        if rate(v) < VOLUME_FLOOR * others {
            low.push(format!(
                "{} has {:.2} events per exposed unit, the others {:.2}",
                v.key,
                rate(v),
                others
            ));
        }
    }
    if low.is_empty() {
        gate(
            "event_volume",
            true,
            "every variant's events per exposed unit are in line with the others'".to_owned(),
        )
    } else {
        gate(
            "event_volume",
            false,
            format!(
                "events missing: {} (below {:.0} % of the others: incomplete data, not a regression)",
                low.join("; "),
                VOLUME_FLOOR * 100.0
            ),
        )
    }
}

fn srm_gate(input: &EvaluationInput) -> Gate {
    let observed: Vec<u64> = input.variants.iter().map(|v| v.exposed).collect();
    let weights: Vec<f64> = input.variants.iter().map(|v| v.weight).collect();
    if observed.iter().sum::<u64>() == 0 {
        return gate("srm", true, "no exposures yet".to_owned());
    }
    match strata_stats::srm::srm_check(&observed, &weights, SRM_ALPHA) {
        Ok(r) if r.mismatch => gate(
            "srm",
            false,
            format!(
                "sample ratio mismatch: exposed units {observed:?} against weights {weights:?}, p = {:.2e} < {SRM_ALPHA}; the comparison is invalid",
                r.p_value
            ),
        ),
        Ok(r) => gate(
            "srm",
            true,
            format!("exposed units match the weights (p = {:.3})", r.p_value),
        ),
        Err(e) => gate("srm", false, format!("cannot check the sample ratio: {e}")),
    }
}

fn direction(d: GuardrailDirection) -> Direction {
    match d {
        GuardrailDirection::IncreaseIsBad => Direction::IncreaseIsBad,
        GuardrailDirection::DecreaseIsBad => Direction::DecreaseIsBad,
    }
}

/// Evaluates `input`: the gates, then (if they all pass) the test of every
/// treatment and the action. Deterministic: the same input gives the same
/// evaluation.
pub fn evaluate(input: &EvaluationInput) -> Evaluation {
    let gates = gates(input);
    let skipped_by = gates.iter().find(|g| !g.passed).map(|g| g.gate.clone());
    let mut out = Evaluation {
        gates,
        skipped_by,
        alpha: None,
        checks: Vec::new(),
        outcome: Outcome::Skipped,
        action: Action::None,
        error: None,
    };
    if out.skipped_by.is_some() {
        return out;
    }
    match tests(input) {
        Ok((alpha, checks)) => {
            out.alpha = Some(alpha);
            out.outcome = if checks.iter().any(|c| c.test.is_breach()) {
                Outcome::Breach
            } else if checks
                .iter()
                .all(|c| c.test.decision == GuardrailDecision::NoBreach)
            {
                Outcome::NoBreach
            } else {
                Outcome::Insufficient
            };
            out.checks = checks;
        }
        Err(e) => {
            out.outcome = Outcome::Insufficient;
            out.error = Some(e);
        }
    }
    if out.outcome == Outcome::Breach {
        let g = &input.guardrail;
        out.action = match g.auto_action {
            AutoAction::Alert => Action::Alert,
            _ if input.requires_approval && !g.force => Action::AwaitApproval,
            AutoAction::Kill => Action::Kill,
            AutoAction::Pause => Action::Pause,
        };
    }
    out
}

fn tests(input: &EvaluationInput) -> Result<(f64, Vec<TreatmentCheck>), String> {
    let g = &input.guardrail;
    let control = input
        .variants
        .iter()
        .find(|v| v.key == input.control)
        .ok_or_else(|| format!("the control {:?} is not among the variants", input.control))?;
    let treatments: Vec<&VariantFacts> = input
        .variants
        .iter()
        .filter(|v| v.key != input.control)
        .collect();
    let alpha = split_alpha(input.budget, input.guardrails.max(1), treatments.len())
        .map_err(|e| e.to_string())?;
    let threshold = if g.relative {
        Threshold::Relative(g.threshold)
    } else {
        Threshold::Absolute(g.threshold)
    };
    let sample = |v: &VariantFacts| Sample {
        n: v.n,
        mean: v.mean,
        variance: v.variance,
    };
    let tuning = MixtureTuning::PlannedUnits(input.planned_units.max(2));
    let checks = treatments
        .iter()
        .map(|t| {
            guardrail_test(
                &sample(control),
                &sample(t),
                direction(g.direction),
                threshold,
                alpha,
                tuning,
            )
            .map(|test| TreatmentCheck {
                treatment: t.key.clone(),
                test,
            })
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((alpha, checks))
}

#[cfg(test)]
mod tests {
    use strata_model::AppliesTo;

    use super::*;

    fn def() -> GuardrailDef {
        GuardrailDef {
            key: "errors_guard".into(),
            metric: "error_rate".into(),
            threshold: 0.01,
            relative: false,
            direction: GuardrailDirection::IncreaseIsBad,
            window_minutes: 15,
            min_samples: 500,
            min_age_minutes: 120,
            auto_action: AutoAction::Kill,
            applies_to: AppliesTo::Listed,
            force: false,
        }
    }

    fn variant(key: &str, n: u64, p: f64) -> VariantFacts {
        VariantFacts {
            key: key.into(),
            weight: 1.0,
            exposed: n + 100,
            events: (n + 100) * 20,
            n,
            mean: p,
            variance: p * (1.0 - p) * n as f64 / (n as f64 - 1.0),
        }
    }

    fn input(treatment_rate: f64) -> EvaluationInput {
        EvaluationInput {
            experiment: "exp".into(),
            guardrail: def(),
            requires_approval: false,
            control: "control".into(),
            budget: 0.01,
            guardrails: 1,
            planned_units: 20_000,
            config_version: 7,
            cutoff: "2026-12-05T12:00:00.000Z".into(),
            activated_at: Some("2026-12-05T09:00:00.000Z".into()),
            age_minutes: 180.0,
            pipeline_lag_seconds: 2.0,
            partitions: (0..16)
                .map(|i| PartitionFacts {
                    part: format!("{i:02}"),
                    events: 1000,
                    silent_seconds: 1.0,
                })
                .collect(),
            partition_count: 16,
            variants: vec![
                variant("control", 5000, 0.02),
                variant("treatment", 5000, treatment_rate),
            ],
            data_error: None,
        }
    }

    #[test]
    fn a_clear_regression_is_a_breach_and_kills() {
        let e = evaluate(&input(0.10));
        assert!(e.gates.iter().all(|g| g.passed), "{:?}", e.gates);
        assert_eq!((e.outcome, e.action), (Outcome::Breach, Action::Kill));
        let worst = e.worst().unwrap();
        assert_eq!(worst.treatment, "treatment");
        assert!(worst.test.lower_bound.unwrap() > 0.01);
        assert_eq!(e.alpha, Some(0.01));
    }

    #[test]
    fn no_harm_is_no_breach() {
        let e = evaluate(&input(0.02));
        assert_eq!((e.outcome, e.action), (Outcome::NoBreach, Action::None));
    }

    #[test]
    fn the_budget_is_split_over_guardrails_and_treatments() {
        let mut i = input(0.02);
        i.guardrails = 3;
        i.variants.push(variant("t2", 5000, 0.02));
        let e = evaluate(&i);
        assert!((e.alpha.unwrap() - 0.01 / 6.0).abs() < 1e-15);
        assert_eq!(e.checks.len(), 2);
    }

    #[test]
    fn approval_and_force_decide_whether_the_monitor_acts() {
        let mut i = input(0.10);
        i.requires_approval = true;
        assert_eq!(evaluate(&i).action, Action::AwaitApproval);
        i.guardrail.force = true;
        assert_eq!(evaluate(&i).action, Action::Kill);
        i.guardrail.auto_action = AutoAction::Pause;
        assert_eq!(evaluate(&i).action, Action::Pause);
        i.guardrail.auto_action = AutoAction::Alert;
        assert_eq!(evaluate(&i).action, Action::Alert);
    }

    fn skipped_by(i: &EvaluationInput) -> Option<String> {
        let e = evaluate(i);
        assert_eq!(e.action, Action::None);
        e.skipped_by
    }

    #[test]
    fn each_gate_stops_a_regression() {
        let base = input(0.10);
        let mut i = base.clone();
        i.data_error = Some("no such metric".into());
        assert_eq!(skipped_by(&i).as_deref(), Some("data"));
        let mut i = base.clone();
        i.activated_at = None;
        assert_eq!(skipped_by(&i).as_deref(), Some("activation"));
        let mut i = base.clone();
        i.age_minutes = 13.0;
        assert_eq!(skipped_by(&i).as_deref(), Some("age"));
        let mut i = base.clone();
        i.pipeline_lag_seconds = 61.0;
        assert_eq!(skipped_by(&i).as_deref(), Some("pipeline_lag"));
        // Partition 07 silent for 30 minutes at ~17 events a minute.
        let mut i = base.clone();
        i.partitions[7].silent_seconds = 1800.0;
        assert_eq!(skipped_by(&i).as_deref(), Some("partitions"));
        let mut i = base.clone();
        i.partitions.truncate(15);
        assert_eq!(skipped_by(&i).as_deref(), Some("partitions"));
        let mut i = base.clone();
        i.variants[1].n = 499;
        assert_eq!(skipped_by(&i).as_deref(), Some("min_samples"));
        let mut i = base.clone();
        i.variants[1].events /= 3;
        let s = skipped_by(&i);
        assert_eq!(s.as_deref(), Some("event_volume"));
        let mut i = base.clone();
        i.variants[1].exposed = i.variants[0].exposed * 9 / 10;
        assert_eq!(skipped_by(&i).as_deref(), Some("srm"));
        // Every gate is recorded even after one failed.
        let e = evaluate(&i);
        assert_eq!(
            e.gates.iter().map(|g| g.gate.as_str()).collect::<Vec<_>>(),
            [
                "data",
                "activation",
                "age",
                "pipeline_lag",
                "partitions",
                "min_samples",
                "event_volume",
                "srm"
            ]
        );
    }

    #[test]
    fn a_quiet_partition_of_a_quiet_pipeline_is_not_behind() {
        let mut i = input(0.10);
        for p in &mut i.partitions {
            p.events = 3;
        }
        i.partitions[7].silent_seconds = 1800.0;
        // 3 events an hour: 1.5 expected in 30 minutes, silence is likely.
        assert_eq!(evaluate(&i).outcome, Outcome::Breach);
        // A partition silent for under a minute more than the others is
        // never behind.
        let mut i = input(0.10);
        i.partitions[7].silent_seconds = 59.0;
        assert_eq!(evaluate(&i).outcome, Outcome::Breach);
        // Nor is any when the whole traffic pauses.
        let mut i = input(0.10);
        for p in &mut i.partitions {
            p.silent_seconds = 900.0;
        }
        assert_eq!(evaluate(&i).outcome, Outcome::Breach);
        i.partitions[3].silent_seconds = 1800.0;
        assert_eq!(evaluate(&i).skipped_by.as_deref(), Some("partitions"));
    }

    #[test]
    fn evaluation_is_a_pure_function_of_its_stored_input() {
        let i = input(0.10);
        let stored = serde_json::to_string(&i).unwrap();
        let back: EvaluationInput = serde_json::from_str(&stored).unwrap();
        assert_eq!(evaluate(&back), evaluate(&i));
    }

    /// A/A experiments checked every 5 minutes for a day, through the gates
    /// and the budget split: the false-kill rate stays within the budget.
    #[test]
    fn a_day_of_a_a_checks_stays_within_the_budget() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let (experiments, checks, per_check) = (400, 288, 40u64);
        let mut kills = 0;
        for _ in 0..experiments {
            let mut arms = [(0u64, 0u64), (0u64, 0u64)];
            for _ in 0..checks {
                for arm in &mut arms {
                    for _ in 0..per_check {
                        arm.0 += 1;
                        arm.1 += u64::from(next() < 0.05);
                    }
                }
                let mut i = input(0.05);
                i.guardrail.threshold = 0.0;
                i.guardrail.min_samples = 100;
                i.planned_units = 2 * per_check * checks as u64;
                for (v, (n, x)) in i.variants.iter_mut().zip(arms) {
                    let p = x as f64 / n as f64;
                    v.n = n;
                    v.exposed = n;
                    v.events = n * 20;
                    v.mean = p;
                    v.variance = p * (1.0 - p) * n as f64 / (n as f64 - 1.0);
                }
                if evaluate(&i).action == Action::Kill {
                    kills += 1;
                    break;
                }
            }
        }
        // Budget 0.01: at most 0.01 + 3 binomial standard errors.
        let bound =
            experiments as f64 * (0.01 + 3.0 * (0.01f64 * 0.99 / experiments as f64).sqrt());
        assert!(
            f64::from(kills) <= bound,
            "{kills} false kills of {experiments}"
        );
    }
}
