//! An experiment's results: one look's numbers per metric with a forest
//! plot, the primary effect over every look with its sequential boundary,
//! the health checks and the SRM banner, the decision, segments, novelty
//! and the guardrail monitor's timeline.
//!
//! The look and its history come from `ResultsService` (permission
//! `results:read` on the experiment's team, as in the API); a look the
//! portal cannot read as the platform's results type is shown as its JSON,
//! never dropped.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use strata_model::results::{
    Decision, Effect, HealthStatus, LookSummary, MetricResult, Novelty, Results, SegmentReport,
};
use strata_server::auth::Perm;
use strata_server::model::{ExperimentRecord, Status};
use strata_server::service::{ExperimentService, GuardrailService, ResultsService, ServiceError};
use strata_server::store::EvaluationRecord;

use crate::page::{csrf_field, may, notice, shell, when, Nav, PortalError};
use crate::plot::{self, format_effect, ForestRow, LookPoint, Tone};
use crate::session::Viewer;
use crate::PortalState;

/// Guardrail evaluations shown on the timeline.
const GUARDRAIL_ROWS: usize = 100;

/// Query of the results page.
#[derive(Debug, Default, Deserialize)]
pub struct ResultsQuery {
    /// The look to show (its publication number); the latest by default.
    look: Option<u64>,
    /// What was just done (a review, a retraction).
    done: Option<String>,
}

/// `GET /experiments/{key}/results`.
pub async fn show(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, PortalError> {
    let actor = viewer.actor();
    let results = ResultsService::new(state.app.clone());
    // The history first: it checks `results:read` on the team, so a viewer
    // of another team gets the 403 page before anything is read.
    let history = results.history(&actor, &key).await?;
    let e = ExperimentService::new(state.app.clone())
        .get(&actor, &key)
        .await?;
    let look = match results.read(&actor, &key, q.look).await {
        Ok(l) => Some(l),
        Err(ServiceError::NotFound { .. }) if q.look.is_none() => None,
        Err(err) => return Err(err.into()),
    };
    let guardrails = GuardrailService::new(state.app.clone())
        .view(&actor, &key)
        .await?;
    let mut looks: Vec<(u64, String, Option<LookSummary>, bool)> = history
        .iter()
        .map(|h| {
            (
                h.meta.seq,
                h.meta.as_of.clone(),
                h.summary
                    .clone()
                    .and_then(|s| serde_json::from_value(s).ok()),
                h.meta.retracted_at.is_some(),
            )
        })
        .collect();
    // Oldest first, as the chart reads.
    looks.reverse();
    let body = html! {
        p.muted { a href="/experiments" { "Experiments" } " / " a href={"/experiments/" (e.key)} { (e.key) } " / results" }
        h1 { "Results: " (e.name) }
        @if let Some(d) = &q.done { (notice("ok", &format!("done: {d}"))) }
        @for g in guardrails.guardrails.iter().filter(|g| g.pending.is_some()) {
            div.notice.notice-error.pending role="alert" {
                strong { "Guardrail " (g.guardrail) " breached" }
                " (" (when(&g.latest.at)) "): its action awaits approval."
                @if may(&viewer, Perm::ExperimentsKill, Some(&e.owner_team)) {
                    div.actions {
                        form method="post" action={"/experiments/" (e.key) "/guardrails/" (g.guardrail) "/confirm"} {
                            (csrf_field(&viewer))
                            button.danger type="submit" { "Confirm: take the action" }
                        }
                        form method="post" action={"/experiments/" (e.key) "/guardrails/" (g.guardrail) "/dismiss"} {
                            (csrf_field(&viewer))
                            button type="submit" { "Dismiss" }
                        }
                    }
                }
            }
        }
        @match &look {
            None => {
                (notice("info", &empty_state(&state)))
            }
            Some(l) => {
                p.muted #look-meta {
                    "Look " (l.meta.seq) " of " (history.len()) ", data as of " (when(&l.meta.as_of))
                    ", published " (when(&l.meta.published_at)) " by " (l.meta.published_by)
                }
                @if l.meta.retracted_at.is_none() && may(&viewer, Perm::ResultsRetract, Some(&e.owner_team)) {
                    details #retract {
                        summary { "Retract this look" }
                        form.stack method="post" action={"/experiments/" (e.key) "/results/" (l.meta.seq) "/retract"} {
                            (csrf_field(&viewer))
                            label for="retract-reason" { "Why (audited; the look stays in the history, marked)" }
                            input #retract-reason name="reason" required;
                            div { button.danger type="submit" { "Retract" } }
                        }
                    }
                }
                @if let Some(r) = &l.meta.retracted_at {
                    (notice("warn", &format!("this look was retracted on {} by {}: {}",
                        when(r), l.meta.retracted_by.as_deref().unwrap_or("?"),
                        l.meta.retract_reason.as_deref().unwrap_or("no reason given"))))
                }
                @if matches!(e.status, Status::Killed | Status::Concluded | Status::Archived) {
                    (notice("info", &format!("this experiment is {}: it no longer runs. The decision below is what this look's data supports, not an action left to take.", e.status.as_str())))
                }
                @match serde_json::from_value::<Results>(l.results.clone()) {
                    Ok(r) => { (document(&r)) }
                    Err(err) => {
                        (notice("warn", &format!("this look's document could not be read by this version of the portal ({err}); it is shown as published")))
                        pre.diff { (serde_json::to_string_pretty(&l.results).unwrap_or_default()) }
                    }
                }
            }
        }
        @if !looks.is_empty() {
            h2 { "Primary effect over looks" }
            (over_looks(&e, &looks))
            details {
                summary { "Every look (" (looks.len()) ")" }
                ol #looks {
                    @for (seq, as_of, s, retracted) in looks.iter().rev() {
                        li {
                            a href={"/experiments/" (e.key) "/results?look=" (seq)} { "look " (seq) }
                            " · " (when(as_of))
                            @if let Some(v) = s.as_ref().and_then(|s| s.verdict) { " · " (v.as_str().replace('_', " ")) }
                            @if *retracted { " · retracted" }
                        }
                    }
                }
            }
        }
        h2 { "Guardrails" }
        (guardrail_timeline(&guardrails.history))
    };
    Ok(shell("Results", Some(&viewer), Nav::Experiments, body).into_response())
}

/// Back to the results page, saying what was done.
fn back(key: &str, done: &str) -> Response {
    let q = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
    Redirect::to(&format!("/experiments/{key}/results?{q}")).into_response()
}

/// `POST /experiments/{key}/guardrails/{guardrail}/confirm`: the pending
/// breach's action is taken (kill or pause), as the viewer.
pub async fn confirm(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path((key, guardrail)): Path<(String, String)>,
) -> Result<Response, PortalError> {
    let r = GuardrailService::new(state.app.clone())
        .confirm(&viewer.actor(), &key, &guardrail)
        .await?;
    Ok(back(
        &key,
        &format!(
            "breach of {guardrail} confirmed; the experiment is {}",
            r.status
        ),
    ))
}

/// `POST /experiments/{key}/guardrails/{guardrail}/dismiss`.
pub async fn dismiss(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path((key, guardrail)): Path<(String, String)>,
) -> Result<Response, PortalError> {
    GuardrailService::new(state.app.clone())
        .dismiss(&viewer.actor(), &key, &guardrail)
        .await?;
    Ok(back(&key, &format!("breach of {guardrail} dismissed")))
}

/// The retraction form.
#[derive(Debug, Deserialize)]
pub struct RetractForm {
    #[serde(default)]
    reason: String,
}

/// `POST /experiments/{key}/results/{seq}/retract`.
pub async fn retract(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path((key, seq)): Path<(String, u64)>,
    Form(f): Form<RetractForm>,
) -> Result<Response, PortalError> {
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(PortalError::BadRequest(
            "a retraction needs a reason".into(),
        ));
    }
    ResultsService::new(state.app.clone())
        .retract(&viewer.actor(), &key, seq, reason)
        .await?;
    Ok(back(&key, &format!("look {seq} retracted")))
}

/// What a results page without looks says.
fn empty_state(state: &PortalState) -> String {
    let next = state
        .settings
        .next_analysis
        .as_ref()
        .and_then(|n| n.get())
        .map(chrono::DateTime::<chrono::Utc>::from);
    match (state.settings.analysis_interval, next) {
        // Its time has come: a run is under way (or about to be).
        (Some(every), Some(at)) if at <= chrono::Utc::now() => format!(
            "no looks yet: a scheduled analysis is due now, then every {}",
            humanize(every)
        ),
        (Some(every), Some(at)) => format!(
            "no looks yet: the next scheduled analysis runs at {} (in {}), then every {}",
            at.format("%Y-%m-%d %H:%M:%S UTC"),
            countdown((at - chrono::Utc::now()).num_seconds().max(1).unsigned_abs()),
            humanize(every)
        ),
        (Some(every), None) => format!(
            "no looks yet: the scheduled analysis publishes one every {}, from the experiment's start",
            humanize(every)
        ),
        (None, _) => "no looks yet: the scheduled analysis is off on this server; looks are published with strata analyze --server".to_owned(),
    }
}

/// A time left, coarsely: `1 h 5 min`, `29 min`, `40 s`.
fn countdown(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `1 h`, `5 min`, `30 s`.
fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// One look's document.
fn document(r: &Results) -> Markup {
    html! {
        @if r.srm.flagged {
            div.notice.notice-error #srm role="alert" {
                strong { "Sample ratio mismatch. " }
                "The variants did not get the units their weights call for (χ² = " (fmt(r.srm.chi2)) ", p = " (fmt_p(Some(r.srm.p_value))) "): "
                @for (i, (v, n)) in r.srm.observed.iter().enumerate() {
                    @if i > 0 { ", " }
                    (v) " " (n) " (expected " (fmt(r.srm.expected.get(v).copied().unwrap_or(f64::NAN))) ")"
                }
                ". Assignment or logging is broken: do not trust these numbers until it is found."
            }
        }
        @if let Some(d) = &r.decision { (decision(d)) }
        p #units { "Units: "
            @for (i, (v, n)) in r.units.iter().enumerate() { @if i > 0 { " · " } (v) " " strong { (n) } }
            " · analysis " (r.analysis.replace('_', "-"))
        }
        h2 { "Metrics" }
        @for m in &r.metrics { (metric(m)) }
        h2 { "Health" }
        (health(r))
        @if let Some(n) = &r.novelty { (novelty(n)) }
        @if !r.segments.is_empty() {
            h2 { "Segments" }
            @for (attr, s) in &r.segments { (segment(attr, s)) }
        }
        @if !r.warnings.is_empty() {
            h2 { "Warnings" }
            ul #warnings { @for w in &r.warnings { li { (w.message) } } }
        }
    }
}

/// The decision box.
fn decision(d: &Decision) -> Markup {
    let kind = match d.verdict.as_str() {
        "ship" => "ok",
        "keep_running" => "info",
        _ => "error",
    };
    html! {
        div class={"notice notice-" (kind)} #decision role="status" {
            strong { "Decision: " span class={"badge verdict-" (d.verdict.as_str())} { (d.verdict.as_str().replace('_', " ")) } }
            @if let Some(v) = &d.variant { " (" (v) ")" }
            @if let Some(days) = d.days_left {
                " · " @if days <= 0.0 { "planned units reached" } @else { "about " (days.ceil()) " days left" }
            }
            ul { @for reason in &d.reasons { li { (reason) } } }
        }
    }
}

/// A metric: its numbers and forest plot.
fn metric(m: &MetricResult) -> Markup {
    let increase_good = m.direction != "increase_is_bad";
    // Relative lifts read across metrics; the absolute delta when a
    // relative one is missing for any treatment.
    let percent = m.effects.iter().all(|e| e.relative.is_some());
    let rows: Vec<ForestRow<'_>> = m
        .effects
        .iter()
        .map(|e| ForestRow {
            label: &e.variant,
            estimate: if percent { e.relative } else { e.delta },
            ci: if percent { e.relative_ci } else { e.ci },
            tone: tone(e, increase_good),
        })
        .collect();
    let value_col = m
        .quantile
        .map_or("Mean".to_owned(), |q| format!("p{}", q * 100.0));
    html! {
        section.card.metric id={"metric-" (m.metric)} {
            h3 { (m.metric) " " span.muted { (m.role) " · " (m.kind) " · " (m.direction.replace('_', " ")) } }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Variant" } th.num scope="col" { "Units" } th.num scope="col" { (value_col) }
                    th.num scope="col" { "Δ" } th.num scope="col" { "Δ interval" } th.num scope="col" { "Relative" }
                    th.num scope="col" { "p" } th.num scope="col" { "Adjusted p" } th scope="col" { "Tier" }
                } }
                tbody {
                    @for (v, vr) in &m.variants {
                        @let effect = m.effects.iter().find(|e| &e.variant == v);
                        tr {
                            th scope="row" { (v) }
                            td.num { (vr.n) }
                            td.num { (fmt(vr.value.or(vr.mean).unwrap_or(f64::NAN))) }
                            @match effect {
                                Some(e) => {
                                    td.num { (format_effect(e.delta, false)) }
                                    td.num { (interval(e.ci, false)) }
                                    td.num { (format_effect(e.relative, true)) " " span.muted { (interval(e.relative_ci, true)) } }
                                    td.num { (fmt_p(e.p_value)) }
                                    td.num { (fmt_p(e.adjusted_p_value)) }
                                    td { (e.tier.replace('_', " "))
                                        @if let Some(why) = &e.insufficient_data { br; span.muted { (why) } } }
                                }
                                None => { td.muted colspan="6" { "control" } }
                            }
                        }
                    }
                }
            } }
            (plot::forest(&format!("{} effect", m.metric), &rows, percent))
        }
    }
}

/// How an effect reads in the metric's direction.
pub(crate) fn tone(e: &Effect, increase_good: bool) -> Tone {
    match e.delta {
        Some(d) if e.significant && d != 0.0 => {
            if (d > 0.0) == increase_good {
                Tone::Better
            } else {
                Tone::Worse
            }
        }
        _ => Tone::Neutral,
    }
}

/// The primary effect of each treatment over the looks.
fn over_looks(e: &ExperimentRecord, looks: &[(u64, String, Option<LookSummary>, bool)]) -> Markup {
    let mut treatments: Vec<String> = Vec::new();
    for (_, _, s, _) in looks {
        for p in s.iter().flat_map(|s| &s.primary) {
            if !treatments.contains(&p.variant) {
                treatments.push(p.variant.clone());
            }
        }
    }
    html! {
        @if treatments.is_empty() {
            p.muted { "no primary effects in the looks' summaries yet" }
        }
        @for t in &treatments {
            @let points: Vec<LookPoint> = looks
                .iter()
                .filter(|(_, _, _, retracted)| !retracted)
                .map(|(_, as_of, s, _)| {
                    let p = s.as_ref().and_then(|s| s.primary.iter().find(|p| &p.variant == t));
                    LookPoint {
                        label: as_of.get(..10).unwrap_or(as_of).to_owned(),
                        estimate: p.and_then(|p| p.delta),
                        ci: p.and_then(|p| p.ci),
                        boundary: p.and_then(|p| p.boundary),
                    }
                })
                .collect();
            h3 { (e.primary_metric) ": " (t) " − control" }
            (plot::over_looks(&format!("{} {t} over looks", e.primary_metric), &points, false))
        }
    }
}

/// The health checks.
fn health(r: &Results) -> Markup {
    html! {
        @if r.health.is_empty() {
            p.muted { "this look has no health checks (published before they existed)" }
        } @else {
            div.table-wrap { table #health {
                thead { tr { th scope="col" { "Check" } th scope="col" { "Status" } th scope="col" { "Finding" } th.hide-narrow scope="col" { "Figures" } } }
                tbody {
                    @for c in &r.health {
                        tr {
                            th scope="row" { (c.check.replace('_', " ")) }
                            td { span class={"badge health-" (c.status.as_str())} { (c.status.as_str()) } }
                            td { (c.message) }
                            td.hide-narrow.muted {
                                @for (i, (k, v)) in c.figures.iter().enumerate() { @if i > 0 { ", " } (k.replace('_', " ")) " " (fmt(*v)) }
                            }
                        }
                    }
                }
            } }
            @if r.health.iter().any(|c| c.status == HealthStatus::Fail) {
                (notice("error", "a health check failed: do not act on these numbers until it is understood"))
            }
        }
    }
}

/// The novelty report.
fn novelty(n: &Novelty) -> Markup {
    html! {
        h2 { "Novelty" }
        p.muted { "The " (n.metric) " effect in each unit's first " (n.window_days) " days against later." }
        div.table-wrap { table #novelty {
            thead { tr { th scope="col" { "Treatment" } th.num scope="col" { "Early Δ" } th.num scope="col" { "Late Δ" } th.num scope="col" { "p (early − late)" } th scope="col" { "Flag" } } }
            tbody { @for e in &n.effects { tr {
                th scope="row" { (e.variant) }
                td.num { (format_effect(e.early.delta, false)) " " span.muted { (interval(e.early.ci, false)) } }
                td.num { (format_effect(e.late.delta, false)) " " span.muted { (interval(e.late.ci, false)) } }
                td.num { (fmt_p(e.decay_p_value)) }
                td { @if e.flagged { span.badge.health-warn { "novelty effect" } } @else { "–" } }
            } } }
        } }
    }
}

/// One segment attribute's breakdown, folded.
fn segment(attr: &str, s: &SegmentReport) -> Markup {
    let flagged: Vec<String> = s
        .simpson
        .iter()
        .flat_map(|(m, by)| {
            by.iter()
                .filter(|(_, x)| x.flagged)
                .map(move |(t, _)| format!("{m} ({t})"))
        })
        .collect();
    html! {
        details.segment {
            summary { (attr) " · " (s.values.len()) " segments"
                @if !flagged.is_empty() { " · " span.badge.health-warn { "Simpson's paradox: " (flagged.join(", ")) } } }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Segment" } th scope="col" { "Metric" } th scope="col" { "Per variant: units, mean" } } }
                tbody {
                    @for (value, metrics) in &s.values {
                        @for (m, by_variant) in metrics {
                            tr {
                                th scope="row" { (value) }
                                td { (m) }
                                td { @for (i, (v, c)) in by_variant.iter().enumerate() {
                                    @if i > 0 { " · " } (v) " " (c.n) ", " (fmt(c.mean.unwrap_or(f64::NAN)))
                                } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// Every evaluation of the guardrail monitor, newest first.
fn guardrail_timeline(history: &[EvaluationRecord]) -> Markup {
    html! {
        @if history.is_empty() {
            p.muted { "no guardrail evaluation yet: the guardrail monitor evaluates running experiments with guardrails every few minutes" }
        } @else {
            div.table-wrap { table #guardrail-timeline {
                thead { tr { th scope="col" { "When" } th scope="col" { "Guardrail" } th scope="col" { "Outcome" } th scope="col" { "Why / action" } } }
                tbody {
                    @for g in history.iter().take(GUARDRAIL_ROWS) {
                        tr {
                            td { (when(&g.at)) }
                            td { (g.guardrail) }
                            td { span class={"badge " (outcome_class(&g.outcome))} { (g.outcome.replace('_', " ")) } }
                            td {
                                @if let Some(gate) = skipped_by(g) { "skipped by gate " strong { (gate.0) } ": " (gate.1) }
                                @if g.action != "none" { "action " (g.action.replace('_', " ")) }
                                @if let Some(t) = &g.taken { " → " (t.replace('_', " ")) }
                                @if let Some(r) = &g.review { " · review " (r) @if let Some(by) = &g.reviewed_by { " by " (by) } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// The badge class of a guardrail outcome.
fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "breach" => "health-fail",
        "no_breach" => "health-ok",
        _ => "health-warn",
    }
}

/// The gate that skipped an evaluation and its detail.
fn skipped_by(g: &EvaluationRecord) -> Option<(String, String)> {
    let ev = g.doc.get("evaluation")?;
    let gate = ev.get("skipped_by")?.as_str()?;
    let detail = ev
        .get("gates")?
        .as_array()?
        .iter()
        .find(|x| x.get("gate").and_then(|n| n.as_str()) == Some(gate))
        .and_then(|x| x.get("detail"))
        .and_then(|d| d.as_str())
        .unwrap_or_default();
    Some((gate.to_owned(), detail.to_owned()))
}

/// `[+0.1, +0.3]`.
pub(crate) fn interval(ci: Option<[f64; 2]>, percent: bool) -> String {
    match ci {
        Some([a, b]) => format!(
            "[{}, {}]",
            format_effect(Some(a), percent),
            format_effect(Some(b), percent)
        ),
        None => "–".to_owned(),
    }
}

/// A figure with four significant digits, `–` when not finite.
pub(crate) fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let digits = 3 - v.abs().log10().floor() as i32;
    if (0..=6).contains(&digits) {
        format!("{v:.*}", digits as usize)
    } else if digits < 0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3e}")
    }
}

/// A p-value: `< 0.0001` below it, else three significant digits.
fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p.is_finite() && p < 0.0001 => "< 0.0001".to_owned(),
        Some(p) if p.is_finite() => format!("{p:.3}"),
        _ => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(fmt(0.123456), "0.1235");
        assert_eq!(fmt(1234.5), "1234");
        assert_eq!(fmt(123456.0), "123456");
        assert_eq!(fmt(f64::NAN), "–");
        assert_eq!(fmt_p(Some(0.00001)), "< 0.0001");
        assert_eq!(fmt_p(Some(0.0412)), "0.041");
        assert_eq!(fmt_p(None), "–");
        assert_eq!(humanize(std::time::Duration::from_secs(3600)), "1 h");
        assert_eq!(humanize(std::time::Duration::from_secs(300)), "5 min");
        assert_eq!(humanize(std::time::Duration::from_secs(45)), "45 s");
        assert_eq!(countdown(1799), "29 min");
        assert_eq!(countdown(3900), "1 h 5 min");
        assert_eq!(countdown(40), "40 s");
    }
}
