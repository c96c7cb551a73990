//! Health checks of a look: whether its numbers can be trusted.
//!
//! Every look of an experiment carries the same list of checks, each `ok`,
//! `warn` or `fail` with the figures it was decided on and a sentence a
//! product manager understands (`docs/results-schema.md`, `docs/statistics.md`).
//! A `fail` means the numbers are not to be trusted (the decision is then
//! `unhealthy`); a `warn` means something to look at, and no `ship` until it
//! clears. The thresholds are in one place, below.
//!
//! The checks read the finished results document plus a few facts of the
//! look that the document does not hold ([`LookFacts`]); they compute no
//! statistics of their own beyond shares and ratios — p-values come from
//! strata-stats through the engine.

use std::collections::BTreeMap;

use strata_model::holdout::{Contamination, CONTAMINATION_CHECK};
use strata_model::results::{HealthCheck, HealthStatus, MetricResult, Results};

/// `srm`: `warn` below this p-value.
pub const SRM_WARN_P: f64 = 0.01;
/// `srm`: a variant's units must deviate from their expected count by at
/// least this share of it for the check to `fail` (below it, `warn`): with
/// millions of units a χ² test finds imbalances too small to matter.
pub const SRM_MIN_RELATIVE_DEVIATION: f64 = 0.005;
/// `bot_exclusion`: `warn` below this p-value of the test that the units
/// left out as bots are spread over the variants as their exposed units
/// are (strict, as the SRM test's default: the check runs at every look).
pub const BOT_SHARE_WARN_P: f64 = 0.001;
/// `bot_exclusion`: the units left out must number at least this many for
/// their spread to be compared (fewer cannot make a difference worth a
/// warning, and the χ² approximation needs expected counts of a few each).
pub const BOT_MIN_EXCLUDED: u64 = 20;
/// `multiple_exposures`: `warn` at this share of units seen in more than one variant.
pub const MULTI_EXPOSURE_WARN: f64 = 0.01;
/// `multiple_exposures`: `fail` at this share.
pub const MULTI_EXPOSURE_FAIL: f64 = 0.10;
/// `pre_exposure_bias`: `warn` below this (Bonferroni-adjusted) p-value.
pub const PRE_BIAS_WARN_P: f64 = 0.01;
/// `pre_exposure_bias`: `fail` below this.
pub const PRE_BIAS_FAIL_P: f64 = 0.001;
/// `missing_data`: a variant's events per exposed unit this many times
/// lower or higher than the other variants' is out of line (`warn`).
pub const MISSING_DATA_RATIO: f64 = 5.0;
/// `missing_data`: variants compared on their rate need this many units each.
pub const MISSING_DATA_MIN_UNITS: u64 = 100;

/// `holdout_contamination`: `fail` at this share of held-out units exposed
/// to a treatment (below it, any such unit is a `warn`): a few units of an
/// SDK that had not yet received a new holdout salt are noise, a share
/// like this is a path that ignores the holdout.
pub const CONTAMINATION_FAIL: f64 = 0.005;

/// What a look knows beyond its results document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookFacts {
    /// Threshold of the sample ratio mismatch test (`fail` below it).
    pub srm_alpha: f64,
    /// Units exposed to more than one variant.
    pub multi_exposure_units: u64,
    /// The p-value of the χ² test that the units the bot detection left out
    /// are spread over the variants in proportion to the variants' exposed
    /// units (`None`: nothing left out, or fewer than two variants with units).
    pub bot_exclusion_p_value: Option<f64>,
    /// Per CUPED metric and treatment: the p-value of the difference in the
    /// pre-period covariate between treatment and control.
    pub covariate_p_values: Vec<(String, String, f64)>,
    /// Days from the start to the end of the data analysed.
    pub elapsed_days: f64,
    /// Days the experiment must run before a `ship` decision.
    pub min_duration_days: u32,
    /// Pre-registered total units, if any.
    pub planned_units: Option<u64>,
    /// Whether the primary metric is tested sequentially (looks before the
    /// planned units are then valid).
    pub sequential: bool,
    /// Pre-registered minimum detectable effect (relative), if any.
    pub mde: Option<f64>,
    /// Significance level.
    pub alpha: f64,
}

fn check(
    name: &str,
    status: HealthStatus,
    figures: &[(&str, f64)],
    message: String,
) -> HealthCheck {
    HealthCheck {
        check: name.to_owned(),
        status,
        figures: figures
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        message,
    }
}

/// The global holdout's check that its units saw no treatment
/// (`docs/statistics.md`, "Global holdout"): `ok` with none, `warn` with a
/// few, `fail` from [`CONTAMINATION_FAIL`] of the held-out units.
pub fn holdout_contamination(c: &Contamination) -> HealthCheck {
    let share = if c.holdout_units == 0 {
        0.0
    } else {
        c.contaminated_units as f64 / c.holdout_units as f64
    };
    let figures = [
        ("holdout_units", c.holdout_units as f64),
        ("contaminated_units", c.contaminated_units as f64),
        ("share", share),
    ];
    let worst = c
        .exposures
        .iter()
        .max_by_key(|x| x.units)
        .map(|x| {
            format!(
                " (most in {} variant {}: {})",
                x.experiment, x.variant, x.units
            )
        })
        .unwrap_or_default();
    let (status, message) = if c.contaminated_units == 0 {
        (
            HealthStatus::Ok,
            format!(
                "none of the {} held-out units saw a treatment",
                c.holdout_units
            ),
        )
    } else {
        let status = if share >= CONTAMINATION_FAIL {
            HealthStatus::Fail
        } else {
            HealthStatus::Warn
        };
        (
            status,
            format!(
                "{} of the {} held-out units ({:.2}%) saw a treatment{worst}: an exposure path ignores the holdout, so the holdout understates what was shipped",
                c.contaminated_units,
                c.holdout_units,
                share * 100.0
            ),
        )
    };
    check(CONTAMINATION_CHECK, status, &figures, message)
}

/// The health checks of a look, always in the same order.
pub fn checks(r: &Results, f: &LookFacts) -> Vec<HealthCheck> {
    vec![
        srm(r, f),
        multiple_exposures(r, f),
        pre_exposure_bias(f),
        missing_data(r),
        minimum_duration(f),
        underpowered(r, f),
        novelty(r, f.alpha),
        simpsons_paradox(r),
        bot_exclusion(r, f),
    ]
}

fn total_units(r: &Results) -> u64 {
    r.units.values().sum()
}

fn pct(x: f64) -> String {
    let p = 100.0 * x;
    if p != 0.0 && p.abs() < 0.1 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

fn srm(r: &Results, f: &LookFacts) -> HealthCheck {
    let p = r.srm.p_value;
    // The variant whose count is furthest from its expectation, relatively.
    let worst = r
        .srm
        .expected
        .iter()
        .filter(|(_, &e)| e > 0.0)
        .map(|(v, &e)| {
            let o = r.srm.observed.get(v).copied().unwrap_or(0) as f64;
            (v.as_str(), (o - e) / e)
        })
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
    let deviation = worst.map_or(0.0, |(_, d)| d);
    let figures = [
        ("p_value", p),
        ("chi2", r.srm.chi2),
        ("max_relative_deviation", deviation),
    ];
    let fail_p = if f.srm_alpha > 0.0 {
        f.srm_alpha
    } else {
        0.001
    };
    let described = || match worst {
        Some((v, d)) => format!(
            "variant {v} has {} {} units than its weight implies (p = {p:.2e})",
            pct(d.abs()),
            if d < 0.0 { "fewer" } else { "more" }
        ),
        None => format!("p = {p:.2e}"),
    };
    if p < fail_p && deviation.abs() >= SRM_MIN_RELATIVE_DEVIATION {
        check(
            "srm",
            HealthStatus::Fail,
            &figures,
            format!(
                "Sample ratio mismatch: {}. Assignment or logging is broken for part of the traffic; the results are not to be trusted until the cause is found.",
                described()
            ),
        )
    } else if p < SRM_WARN_P.max(fail_p) {
        check(
            "srm",
            HealthStatus::Warn,
            &figures,
            format!(
                "Units are split slightly off the configured weights: {}. Worth checking; {}.",
                described(),
                if p < fail_p {
                    "the imbalance is too small to distort the results"
                } else {
                    "it may be chance"
                }
            ),
        )
    } else {
        check(
            "srm",
            HealthStatus::Ok,
            &figures,
            format!("Units are split as configured (p = {p:.2})."),
        )
    }
}

fn bot_exclusion(r: &Results, f: &LookFacts) -> HealthCheck {
    let name = "bot_exclusion";
    let Some(bots) = r.bot_exclusion.as_ref().filter(|b| b.enabled) else {
        return check(
            name,
            HealthStatus::Ok,
            &[],
            "Bot detection is off: only traffic flagged as bots when it was logged is left out."
                .to_owned(),
        );
    };
    let excluded: u64 = bots.excluded.values().sum();
    let exposed = excluded + total_units(r);
    let share = if exposed == 0 {
        0.0
    } else {
        excluded as f64 / exposed as f64
    };
    let p = f.bot_exclusion_p_value;
    // The variants with the highest and the lowest share left out.
    let by_share = |a: &(&String, &f64), b: &(&String, &f64)| a.1.total_cmp(b.1);
    let highest = bots.share.iter().max_by(by_share);
    let lowest = bots.share.iter().min_by(by_share);
    let figures = [
        ("excluded_units", excluded as f64),
        ("share", share),
        ("max_share", highest.map_or(0.0, |(_, &s)| s)),
        ("min_share", lowest.map_or(0.0, |(_, &s)| s)),
        ("p_value", p.unwrap_or(f64::NAN)),
    ];
    if excluded == 0 {
        return check(
            name,
            HealthStatus::Ok,
            &figures,
            "No unit showed activity beyond what a person produces.".to_owned(),
        );
    }
    let left_out = format!(
        "{excluded} {} ({}) left out for activity no person produces",
        if excluded == 1 { "unit" } else { "units" },
        pct(share)
    );
    match (p, highest, lowest) {
        (Some(p), Some((hi, &hs)), Some((lo, &ls)))
            if excluded >= BOT_MIN_EXCLUDED && p < BOT_SHARE_WARN_P =>
        {
            check(
                name,
                HealthStatus::Warn,
                &figures,
                format!(
                    "Variant {hi} had {} of its units left out as bots against {} in {lo} (p = {p:.2e}): the change itself may cause bot-like activity, or change who is taken for a bot, so the variants no longer compare like with like. Check what the left-out units did before trusting the results.",
                    pct(hs),
                    pct(ls)
                ),
            )
        }
        _ if excluded < BOT_MIN_EXCLUDED => check(
            name,
            HealthStatus::Ok,
            &figures,
            format!("{left_out}; too few to compare between variants."),
        ),
        _ => check(
            name,
            HealthStatus::Ok,
            &figures,
            format!(
                "{left_out}, alike in every variant{}.",
                p.map_or(String::new(), |p| format!(" (p = {p:.2})"))
            ),
        ),
    }
}

fn multiple_exposures(r: &Results, f: &LookFacts) -> HealthCheck {
    let total = total_units(r);
    let share = if total == 0 {
        0.0
    } else {
        f.multi_exposure_units as f64 / total as f64
    };
    let figures = [("units", f.multi_exposure_units as f64), ("share", share)];
    let status = if share >= MULTI_EXPOSURE_FAIL {
        HealthStatus::Fail
    } else if share >= MULTI_EXPOSURE_WARN {
        HealthStatus::Warn
    } else {
        HealthStatus::Ok
    };
    let message = match status {
        HealthStatus::Ok if f.multi_exposure_units == 0 => {
            "Every unit saw a single variant.".to_owned()
        }
        HealthStatus::Ok => format!(
            "{} of units ({}) saw more than one variant; each counts in the variant it saw first.",
            pct(share),
            f.multi_exposure_units
        ),
        _ => format!(
            "{} of units ({}) saw more than one variant: the unit id is not stable (logged-out users, shared devices) or assignment changed under them; the variants are mixed and effects are diluted.",
            pct(share),
            f.multi_exposure_units
        ),
    };
    check("multiple_exposures", status, &figures, message)
}

fn pre_exposure_bias(f: &LookFacts) -> HealthCheck {
    let tests = f.covariate_p_values.len();
    let Some((metric, variant, p)) = f
        .covariate_p_values
        .iter()
        .min_by(|a, b| a.2.total_cmp(&b.2))
    else {
        return check(
            "pre_exposure_bias",
            HealthStatus::Ok,
            &[("comparisons", 0.0)],
            "No pre-period data to compare (CUPED is off or had no data).".to_owned(),
        );
    };
    // Bonferroni over every (metric, treatment) compared: with many CUPED
    // metrics one of them is otherwise bound to look unbalanced by chance.
    let adjusted = (p * tests as f64).min(1.0);
    let figures = [
        ("p_value", *p),
        ("adjusted_p_value", adjusted),
        ("comparisons", tests as f64),
    ];
    let status = if adjusted < PRE_BIAS_FAIL_P {
        HealthStatus::Fail
    } else if adjusted < PRE_BIAS_WARN_P {
        HealthStatus::Warn
    } else {
        HealthStatus::Ok
    };
    let message = match status {
        HealthStatus::Ok => format!(
            "Before the experiment the variants behaved alike (lowest adjusted p = {adjusted:.2})."
        ),
        _ => format!(
            "Before the experiment started, variant {variant} already differed from the control on `{metric}` (adjusted p = {adjusted:.2e}): the groups were not comparable to begin with, so part of any effect may predate the change."
        ),
    };
    check("pre_exposure_bias", status, &figures, message)
}

/// A variant's activity for a metric, per exposed unit, where the document
/// allows it: events (or converting units) per unit for counts, the share
/// of units with values for means, events per unit for quantiles.
fn activity(m: &MetricResult, variant: &str, units: u64) -> Option<f64> {
    let v = m.variants.get(variant)?;
    if units == 0 {
        return None;
    }
    match m.kind.as_str() {
        "binomial" | "count" | "sum" => v.mean,
        "mean" | "quantile" => Some(v.n as f64 / units as f64),
        _ => None,
    }
}

fn missing_data(r: &Results) -> HealthCheck {
    let mut empty: Vec<String> = Vec::new();
    let mut off: Vec<(String, String, f64)> = Vec::new();
    for m in &r.metrics {
        let rates: BTreeMap<&str, Option<f64>> = r
            .units
            .iter()
            .map(|(v, &n)| (v.as_str(), activity(m, v, n)))
            .collect();
        let some_active = rates.values().any(|x| x.is_some_and(|x| x > 0.0));
        for (v, &n) in &r.units {
            let Some(Some(rate)) = rates.get(v.as_str()) else {
                continue;
            };
            if n > 0 && *rate == 0.0 && some_active {
                empty.push(format!("`{}` in {v}", m.metric));
                continue;
            }
            // Against the median rate of the other variants with enough units.
            let mut others: Vec<f64> = r
                .units
                .iter()
                .filter(|(o, &on)| *o != v && on >= MISSING_DATA_MIN_UNITS)
                .filter_map(|(o, _)| rates.get(o.as_str()).copied().flatten())
                .filter(|x| *x > 0.0)
                .collect();
            if n < MISSING_DATA_MIN_UNITS || others.is_empty() || *rate <= 0.0 {
                continue;
            }
            others.sort_by(f64::total_cmp);
            let median = others[others.len() / 2];
            let ratio = rate / median;
            if !(1.0 / MISSING_DATA_RATIO..=MISSING_DATA_RATIO).contains(&ratio) {
                off.push((m.metric.clone(), v.clone(), ratio));
            }
        }
    }
    let figures = [
        ("empty_metric_variants", empty.len() as f64),
        ("out_of_line_metric_variants", off.len() as f64),
    ];
    if !empty.is_empty() {
        check(
            "missing_data",
            HealthStatus::Fail,
            &figures,
            format!(
                "No events at all for {}, while other variants have them: events are probably not being logged there.",
                empty.join(", ")
            ),
        )
    } else if let Some((metric, variant, ratio)) = off.first() {
        check(
            "missing_data",
            HealthStatus::Warn,
            &figures,
            format!(
                "Variant {variant} logs {ratio:.2}× the `{metric}` events per unit of the other variants: far more than a product change usually moves; check its logging."
            ),
        )
    } else {
        check(
            "missing_data",
            HealthStatus::Ok,
            &figures,
            "Every variant logs the metrics' events at comparable rates.".to_owned(),
        )
    }
}

fn minimum_duration(f: &LookFacts) -> HealthCheck {
    let min = f64::from(f.min_duration_days);
    let figures = [("elapsed_days", f.elapsed_days), ("min_duration_days", min)];
    if f.elapsed_days < min {
        check(
            "minimum_duration",
            HealthStatus::Warn,
            &figures,
            format!(
                "The experiment has run {:.1} of its minimum {} days: early results over-represent the days and users seen so far; no ship decision before then.",
                f.elapsed_days, f.min_duration_days
            ),
        )
    } else {
        check(
            "minimum_duration",
            HealthStatus::Ok,
            &figures,
            format!(
                "The experiment has run {:.1} days, at least its minimum {}.",
                f.elapsed_days, f.min_duration_days
            ),
        )
    }
}

fn underpowered(r: &Results, f: &LookFacts) -> HealthCheck {
    let units = total_units(r);
    let Some(planned) = f.planned_units else {
        return check(
            "underpowered",
            HealthStatus::Ok,
            &[("units", units as f64)],
            "No planned sample size to compare with.".to_owned(),
        );
    };
    let share = units as f64 / planned.max(1) as f64;
    let figures = [
        ("units", units as f64),
        ("planned_units", planned as f64),
        ("share", share),
    ];
    if units >= planned {
        check(
            "underpowered",
            HealthStatus::Ok,
            &figures,
            format!("The experiment has its planned {planned} units ({units})."),
        )
    } else if f.sequential {
        // A sequential test's boundaries allow for looking before the end.
        check(
            "underpowered",
            HealthStatus::Ok,
            &figures,
            format!(
                "{units} of the planned {planned} units ({}); the sequential test accounts for looking early.",
                pct(share)
            ),
        )
    } else {
        check(
            "underpowered",
            HealthStatus::Warn,
            &figures,
            format!(
                "Only {units} of the planned {planned} units ({}): a fixed-horizon test read before its planned sample finds effects that are not there more often than its alpha says.",
                pct(share)
            ),
        )
    }
}

/// `Δ [lo, hi]` of a window's effect.
fn window(w: &strata_model::results::WindowEffect) -> String {
    match (w.delta, w.ci) {
        (Some(d), Some([lo, hi])) => format!("{d:+.4} [{lo:+.4}, {hi:+.4}]"),
        (Some(d), None) => format!("{d:+.4}"),
        _ => "not measurable".to_owned(),
    }
}

fn novelty(r: &Results, alpha: f64) -> HealthCheck {
    let flagged: Vec<&str> = r
        .novelty
        .iter()
        .flat_map(|n| n.effects.iter())
        .filter(|e| e.flagged)
        .map(|e| e.variant.as_str())
        .collect();
    let figures = [("flagged_variants", flagged.len() as f64)];
    match (&r.novelty, flagged.first()) {
        (Some(n), Some(v)) => check(
            "novelty",
            HealthStatus::Warn,
            &figures,
            format!(
                "Variant {v}'s effect on `{}` is significantly larger in units' first {} days than later: part of it is novelty and will fade.",
                n.metric, n.window_days
            ),
        ),
        // Say what was seen, not more: a decay test on a thin late window
        // finds nothing because it can find nothing.
        (Some(n), None) => {
            let d = n.window_days;
            let testable: Vec<_> = n
                .effects
                .iter()
                .filter(|e| e.decay_p_value.is_some())
                .collect();
            let early: Vec<_> = testable
                .iter()
                .filter(|e| e.early.p_value.is_some_and(|p| p < alpha))
                .collect();
            let message = if testable.is_empty() {
                format!(
                    "Not checkable yet: too few units have been exposed longer than {d} days to measure the effect after their first days."
                )
            } else if early.is_empty() {
                format!("No significant effect in units' first {d} days, so no novelty to fade.")
            } else {
                let parts: Vec<String> = early
                    .iter()
                    .map(|e| {
                        format!(
                            "in {}, {} in units' first {d} days against {} after them ({} units later), p = {:.3}",
                            e.variant,
                            window(&e.early),
                            window(&e.late),
                            e.late.n[0] + e.late.n[1],
                            e.decay_p_value.unwrap_or(1.0)
                        )
                    })
                    .collect();
                format!(
                    "No significant fading of the effect on `{}`: {}.",
                    n.metric,
                    parts.join("; ")
                )
            };
            check("novelty", HealthStatus::Ok, &figures, message)
        }
        (None, _) => check(
            "novelty",
            HealthStatus::Ok,
            &figures,
            "Not checked: the primary metric has no per-unit early and late windows (ratio and quantile metrics).".to_owned(),
        ),
    }
}

fn simpsons_paradox(r: &Results) -> HealthCheck {
    let mut flagged = Vec::new();
    for (attr, seg) in &r.segments {
        for (metric, per_variant) in &seg.simpson {
            for (variant, s) in per_variant {
                if s.flagged {
                    flagged.push(format!("`{metric}` in {variant} by {attr}"));
                }
            }
        }
    }
    let figures = [("flagged", flagged.len() as f64)];
    if flagged.is_empty() {
        check(
            "simpsons_paradox",
            HealthStatus::Ok,
            &figures,
            if r.segments.is_empty() {
                "Not checked: no segments are pre-registered.".to_owned()
            } else {
                "Segments agree with the overall effects.".to_owned()
            },
        )
    } else {
        check(
            "simpsons_paradox",
            HealthStatus::Warn,
            &figures,
            format!(
                "Most segments show the opposite effect to the total for {}: the overall number hides a mix shift between segments; read the breakdown before deciding.",
                flagged.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_model::results::{Srm, VariantResult};

    fn results(control: u64, treatment: u64) -> Results {
        let units: BTreeMap<String, u64> = [
            ("control".to_owned(), control),
            ("treatment".to_owned(), treatment),
        ]
        .into();
        let srm = strata_stats::srm::srm_check(&[control, treatment], &[1.0, 1.0], 0.001).unwrap();
        Results {
            experiment: "e".into(),
            as_of: "2026-01-08T00:00:00Z".into(),
            start: "2026-01-01T00:00:00Z".into(),
            analysis: "itt".into(),
            units: units.clone(),
            bot_exclusion: None,
            srm: Srm {
                chi2: srm.chi_squared,
                df: srm.df,
                p_value: srm.p_value,
                flagged: srm.mismatch,
                observed: units,
                expected: [
                    ("control".to_owned(), srm.expected[0]),
                    ("treatment".to_owned(), srm.expected[1]),
                ]
                .into(),
            },
            metrics: vec![],
            segments: BTreeMap::new(),
            novelty: None,
            warnings: vec![],
            health: vec![],
            decision: None,
        }
    }

    fn facts() -> LookFacts {
        LookFacts {
            srm_alpha: 0.001,
            elapsed_days: 10.0,
            min_duration_days: 7,
            ..LookFacts::default()
        }
    }

    fn status(checks: &[HealthCheck], name: &str) -> HealthStatus {
        checks.iter().find(|c| c.check == name).unwrap().status
    }

    #[test]
    fn every_look_has_every_check_in_order() {
        let c = checks(&results(5000, 5000), &facts());
        let names: Vec<&str> = c.iter().map(|c| c.check.as_str()).collect();
        assert_eq!(names, strata_model::results::HEALTH_CHECKS);
        assert!(c.iter().all(|c| c.status == HealthStatus::Ok), "{c:#?}");
        assert!(c.iter().all(|c| !c.message.is_empty()));
    }

    /// A look of 5000 units per variant before exclusion, `bots` of them
    /// left out per variant, with the facts the engine would give.
    fn with_bots(bots: [u64; 2]) -> (Results, LookFacts) {
        use strata_model::results::BotExclusion;
        let mut r = results(5000 - bots[0], 5000 - bots[1]);
        let names = ["control".to_owned(), "treatment".to_owned()];
        let excluded: BTreeMap<String, u64> = names.iter().cloned().zip(bots).collect();
        r.bot_exclusion = Some(BotExclusion {
            enabled: true,
            share: names
                .iter()
                .cloned()
                .zip(bots.map(|b| b as f64 / 5000.0))
                .collect(),
            excluded: excluded.clone(),
        });
        let f = LookFacts {
            bot_exclusion_p_value: crate::engine::bot_share_p_value(&r.units, &excluded),
            ..facts()
        };
        (r, f)
    }

    fn bot_check(bots: [u64; 2]) -> HealthCheck {
        let (r, f) = with_bots(bots);
        checks(&r, &f)
            .into_iter()
            .find(|c| c.check == "bot_exclusion")
            .unwrap()
    }

    #[test]
    fn bot_exclusion_warns_when_one_variant_loses_more_units() {
        // 2.0 % against 0.6 %: χ² ≈ 35, far beyond chance.
        let c = bot_check([30, 100]);
        assert_eq!(c.status, HealthStatus::Warn, "{c:?}");
        assert!(c.figures["p_value"] < 1e-6, "{c:?}");
        assert_eq!(c.figures["excluded_units"], 130.0);
        assert_eq!(c.figures["max_share"], 0.02);
        assert!(
            c.message.starts_with(
                "Variant treatment had 2.0 % of its units left out as bots against 0.6 % in control"
            ),
            "{}",
            c.message
        );
        // Alike in both: ok, with the p-value.
        let c = bot_check([48, 52]);
        assert_eq!(c.status, HealthStatus::Ok, "{c:?}");
        assert!(c.figures["p_value"] > 0.5, "{c:?}");
        assert_eq!(
            c.message,
            "100 units (1.0 %) left out for activity no person produces, alike in every variant (p = 0.69)."
        );
    }

    #[test]
    fn bot_exclusion_needs_enough_units_to_compare() {
        // 0 against 12 is significant (p ≈ 0.0005) but 12 units cannot
        // move a result: below the minimum the check stays ok.
        let c = bot_check([0, 12]);
        assert!(c.figures["p_value"] < BOT_SHARE_WARN_P, "{c:?}");
        assert_eq!(c.status, HealthStatus::Ok, "{c:?}");
        assert!(
            c.message.ends_with("too few to compare between variants."),
            "{}",
            c.message
        );
        let c = bot_check([0, 0]);
        assert_eq!(c.status, HealthStatus::Ok);
        assert_eq!(
            c.message,
            "No unit showed activity beyond what a person produces."
        );
        assert!(!c.figures.contains_key("p_value"));
        // Detection off (or a document written before it): ok, and says so.
        let c = checks(&results(5000, 5000), &facts());
        let c = c.iter().find(|c| c.check == "bot_exclusion").unwrap();
        assert_eq!(c.status, HealthStatus::Ok);
        assert!(
            c.message.starts_with("Bot detection is off"),
            "{}",
            c.message
        );
    }

    #[test]
    fn novelty_says_what_it_could_see() {
        use strata_model::results::{Novelty, NoveltyEffect, WindowEffect};
        let w = |n: u64, delta: f64, p: f64| WindowEffect {
            n: [n, n],
            delta: Some(delta),
            ci: Some([delta - 0.01, delta + 0.01]),
            p_value: Some(p),
        };
        let look = |early_p: f64, decay: Option<f64>, flagged: bool| {
            let mut r = results(5000, 5000);
            r.novelty = Some(Novelty {
                metric: "conversion".into(),
                window_days: 7,
                effects: vec![NoveltyEffect {
                    variant: "treatment".into(),
                    early: w(5000, 0.02, early_p),
                    late: w(40, 0.01, 0.4),
                    decay_p_value: decay,
                    flagged,
                }],
            });
            let f = LookFacts {
                alpha: 0.05,
                ..facts()
            };
            let c = checks(&r, &f);
            let n = c.iter().find(|c| c.check == "novelty").unwrap().clone();
            (n.status, n.message)
        };
        let (s, m) = look(0.001, None, false);
        assert_eq!(s, HealthStatus::Ok);
        assert!(m.starts_with("Not checkable yet"), "{m}");
        let (_, m) = look(0.3, Some(0.5), false);
        assert!(
            m.starts_with("No significant effect in units' first 7 days"),
            "{m}"
        );
        // A significant early effect and a thin late window: the figures say
        // how little the late window shows, not that there is no novelty.
        let (s, m) = look(0.001, Some(0.2), false);
        assert_eq!(s, HealthStatus::Ok);
        assert!(
            m.contains("+0.0100 [+0.0000, +0.0200] after them (80 units later), p = 0.200"),
            "{m}"
        );
        let (s, m) = look(0.001, Some(0.001), true);
        assert_eq!(s, HealthStatus::Warn);
        assert!(m.contains("will fade"), "{m}");
    }

    #[test]
    fn srm_fails_only_on_a_deviation_that_matters() {
        // 5,200 against 4,800: χ² = 16, p ≈ 6e-5, a 4 % deviation.
        let c = checks(&results(5200, 4800), &facts());
        assert_eq!(status(&c, "srm"), HealthStatus::Fail);
        assert!(c[0].message.contains("4.0 %"), "{}", c[0].message);
        assert!(c[0].figures["p_value"] < 0.001);
        // The same p-value region among 20 million units is a 0.1 % imbalance: a warning.
        let c = checks(&results(10_010_000, 9_990_000), &facts());
        assert!(c[0].figures["p_value"] < 0.001, "{:?}", c[0].figures);
        assert_eq!(status(&c, "srm"), HealthStatus::Warn);
        // 5,150 against 4,850: χ² = 9, p ≈ 0.0027: a warning.
        let c = checks(&results(5150, 4850), &facts());
        let p = c[0].figures["p_value"];
        assert!((0.001..0.01).contains(&p), "{p}");
        assert_eq!(status(&c, "srm"), HealthStatus::Warn);
    }

    #[test]
    fn multiple_exposures_warn_at_one_percent_and_fail_at_ten() {
        let r = results(5000, 5000);
        for (multi, want) in [
            (99, HealthStatus::Ok),
            (100, HealthStatus::Warn),
            (999, HealthStatus::Warn),
            (1000, HealthStatus::Fail),
        ] {
            let f = LookFacts {
                multi_exposure_units: multi,
                ..facts()
            };
            assert_eq!(
                status(&checks(&r, &f), "multiple_exposures"),
                want,
                "{multi}"
            );
        }
    }

    #[test]
    fn pre_exposure_bias_is_adjusted_for_the_comparisons_made() {
        let r = results(5000, 5000);
        let f = |ps: &[f64]| LookFacts {
            covariate_p_values: ps
                .iter()
                .enumerate()
                .map(|(i, &p)| (format!("m{i}"), "treatment".to_owned(), p))
                .collect(),
            ..facts()
        };
        assert_eq!(
            status(&checks(&r, &f(&[0.005])), "pre_exposure_bias"),
            HealthStatus::Warn
        );
        // 0.005 is the lowest of four: 0.02 adjusted.
        assert_eq!(
            status(
                &checks(&r, &f(&[0.005, 0.5, 0.6, 0.7])),
                "pre_exposure_bias"
            ),
            HealthStatus::Ok
        );
        let c = checks(&r, &f(&[0.0002, 0.5]));
        assert_eq!(status(&c, "pre_exposure_bias"), HealthStatus::Fail);
        assert_eq!(c[2].figures["adjusted_p_value"], 0.0004);
        assert!(c[2].message.contains("`m0`"), "{}", c[2].message);
    }

    fn metric(kind: &str, means: [Option<f64>; 2], ns: [u64; 2]) -> MetricResult {
        let v = |mean, n| VariantResult {
            n,
            mean,
            variance: None,
            cuped_mean: None,
            value: None,
            ci: None,
        };
        MetricResult {
            metric: "m".into(),
            role: "primary".into(),
            kind: kind.into(),
            direction: "increase_is_good".into(),
            quantile: None,
            winsorize_caps: None,
            variants: [
                ("control".to_owned(), v(means[0], ns[0])),
                ("treatment".to_owned(), v(means[1], ns[1])),
            ]
            .into(),
            effects: vec![],
        }
    }

    #[test]
    fn missing_data_fails_on_a_silent_variant_and_warns_on_one_far_out_of_line() {
        let mut r = results(5000, 5000);
        r.metrics = vec![metric("count", [Some(2.0), Some(2.2)], [5000, 5000])];
        assert_eq!(
            status(&checks(&r, &facts()), "missing_data"),
            HealthStatus::Ok
        );
        r.metrics = vec![metric("count", [Some(2.0), Some(0.0)], [5000, 5000])];
        let c = checks(&r, &facts());
        assert_eq!(status(&c, "missing_data"), HealthStatus::Fail);
        assert!(
            c[3].message.contains("`m` in treatment"),
            "{}",
            c[3].message
        );
        r.metrics = vec![metric("count", [Some(2.0), Some(0.3)], [5000, 5000])];
        assert_eq!(
            status(&checks(&r, &facts()), "missing_data"),
            HealthStatus::Warn
        );
        // Mean metrics: the share of units with values.
        r.metrics = vec![metric("mean", [Some(10.0), Some(11.0)], [4000, 500])];
        assert_eq!(
            status(&checks(&r, &facts()), "missing_data"),
            HealthStatus::Warn
        );
        // No variant has events: nothing is out of line (the metric is just empty).
        r.metrics = vec![metric("binomial", [Some(0.0), Some(0.0)], [5000, 5000])];
        assert_eq!(
            status(&checks(&r, &facts()), "missing_data"),
            HealthStatus::Ok
        );
    }

    #[test]
    fn duration_and_planned_units() {
        let r = results(5000, 5000);
        let early = LookFacts {
            elapsed_days: 3.5,
            ..facts()
        };
        let c = checks(&r, &early);
        assert_eq!(status(&c, "minimum_duration"), HealthStatus::Warn);
        assert!(
            c[4].message.contains("3.5 of its minimum 7 days"),
            "{}",
            c[4].message
        );
        let planned = LookFacts {
            planned_units: Some(20_000),
            ..facts()
        };
        assert_eq!(
            status(&checks(&r, &planned), "underpowered"),
            HealthStatus::Warn
        );
        let sequential = LookFacts {
            sequential: true,
            ..planned.clone()
        };
        assert_eq!(
            status(&checks(&r, &sequential), "underpowered"),
            HealthStatus::Ok
        );
        let reached = LookFacts {
            planned_units: Some(10_000),
            ..facts()
        };
        assert_eq!(
            status(&checks(&r, &reached), "underpowered"),
            HealthStatus::Ok
        );
    }

    #[test]
    fn a_contaminated_holdout_warns_then_fails() {
        use strata_model::holdout::ContaminatedVariant;
        let clean = Contamination {
            holdout_units: 1000,
            ..Contamination::default()
        };
        assert_eq!(holdout_contamination(&clean).status, HealthStatus::Ok);
        let few = Contamination {
            holdout_units: 1000,
            contaminated_units: 4,
            exposures: vec![ContaminatedVariant {
                experiment: "exp_a".into(),
                variant: "treatment".into(),
                units: 4,
            }],
        };
        let c = holdout_contamination(&few);
        assert_eq!(c.status, HealthStatus::Warn);
        assert!(
            c.message.contains("exp_a variant treatment: 4"),
            "{}",
            c.message
        );
        assert_eq!(c.figures["share"], 0.004);
        let many = Contamination {
            contaminated_units: 5,
            ..few
        };
        assert_eq!(holdout_contamination(&many).status, HealthStatus::Fail);
    }
}
