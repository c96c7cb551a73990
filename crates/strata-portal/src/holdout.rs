//! The global holdout: its setting, and what everything shipped adds up to
//! — the running period's look on the key metrics (the lift of everyone
//! else over the holdout, beside the sum of the lifts the winners concluded
//! during the period claimed), its contamination check, the winners, and
//! the history of periods with their final looks. Reads and changes go
//! through `RegistryService` and `HoldoutService`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use strata_model::holdout::{HoldoutLook, HoldoutPeriod, Lift};
use strata_model::results::HealthStatus;
use strata_server::auth::Perm;
use strata_server::service::registry::{HoldoutChange, RegistryService};
use strata_server::service::{HoldoutService, ServiceError};

use crate::page::{csrf_field, field, fields, may, notice, shell, when, Nav, PortalError};
use crate::platform::{after, Done, Flash};
use crate::plot::{forest, format_effect, ForestRow};
use crate::results::{interval, tone};
use crate::session::Viewer;
use crate::PortalState;

/// `GET /holdout`.
pub async fn holdout(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    holdout_page(&state, &viewer, d.flash()).await
}

fn lift_text(l: Option<&Lift>) -> String {
    match l {
        Some(l) => format!(
            "{} {}",
            format_effect(l.relative, true),
            interval(l.relative_ci, true)
        ),
        None => "–".to_owned(),
    }
}

/// The look at a period: the forest plot and table of the key metrics,
/// the contamination check, the winners.
fn look_section(look: &HoldoutLook, title: &str) -> Markup {
    let r = &look.results;
    let rows: Vec<ForestRow<'_>> = r
        .metrics
        .iter()
        .filter_map(|m| {
            let e = m.effects.first()?;
            Some(ForestRow {
                label: &m.metric,
                estimate: e.relative,
                ci: e.relative_ci,
                tone: tone(e, m.direction != "increase_is_bad"),
            })
        })
        .collect();
    let check = r
        .health
        .iter()
        .find(|h| h.check == strata_model::holdout::CONTAMINATION_CHECK);
    html! {
        p.muted { "As of " (when(&look.as_of))
            @if look.final_look { " · final look" }
            " · " (r.units.get("holdout").copied().unwrap_or(0)) " held-out units, "
            (r.units.get("rest").copied().unwrap_or(0)) " others"
            @if r.srm.flagged { " · " strong { "sample ratio mismatch" } } }
        @if let Some(c) = check {
            @let kind = match c.status { HealthStatus::Ok => "ok", HealthStatus::Warn => "warn", HealthStatus::Fail => "error" };
            (notice(kind, &format!("Contamination: {} — {}", c.status.as_str(), c.message)))
        }
        (forest(title, &rows, true))
        div.table-wrap { table {
            thead { tr { th { "Key metric" } th.num { "Holdout" } th.num { "Everyone else" } th.num { "Measured lift" } th.num { "Claimed by winners" } } }
            tbody {
                @for m in &r.metrics {
                    @let impact = look.attribution.metrics.iter().find(|i| i.metric == m.metric);
                    tr {
                        td { (m.metric) }
                        td.num { (m.variants.get("holdout").and_then(|v| v.mean).map(crate::results::fmt).unwrap_or_else(|| "–".into())) }
                        td.num { (m.variants.get("rest").and_then(|v| v.mean).map(crate::results::fmt).unwrap_or_else(|| "–".into())) }
                        td.num { (lift_text(impact.and_then(|i| i.measured.as_ref()))) }
                        td.num {
                            @match impact {
                                Some(i) if i.claimed_by > 0 => { (format_effect(Some(i.claimed_sum), true)) " " span.muted { "(sum of " (i.claimed_by) ")" } }
                                _ => "–",
                            }
                        }
                    }
                }
            }
        } }
        @if look.attribution.winners.is_empty() {
            p.muted { "No experiment respecting the holdout was concluded with a winner during this period." }
        } @else {
            h3 { "Winners concluded during the period" }
            div.table-wrap { table.winners {
                thead { tr { th { "Experiment" } th { "Shipped" } th { "Concluded" }
                    @for m in &r.metrics { th.num { (m.metric) } } } }
                tbody {
                    @for w in &look.attribution.winners {
                        tr {
                            td { a href=(format!("/experiments/{}", w.experiment)) { (w.experiment) } }
                            td { (w.winner) }
                            td { (when(&w.concluded_at)) }
                            @if w.withheld {
                                td.num.muted colspan=(r.metrics.len()) { "withheld: another team's results" }
                            } @else {
                                @for m in &r.metrics { td.num { (lift_text(w.lifts.get(&m.metric))) } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn history(periods: &[HoldoutPeriod]) -> Markup {
    html! {
        div.table-wrap { table.periods {
            thead { tr { th { "Period" } th { "Held out" } th { "Started" } th { "Ended" } th.num { "Primary lift" } th { "Contamination" } } }
            tbody {
                @for p in periods {
                    tr {
                        td { (p.period) }
                        td { (p.percent) " %" }
                        td { (when(&p.started_at)) }
                        td { @match (&p.ended_at, &p.ended_by) {
                            (Some(t), Some(by)) => { (when(t)) " " span.muted { "by " (by) } }
                            (Some(t), None) => (when(t)),
                            _ => "running",
                        } }
                        @let first = p.look.as_ref().and_then(|l| l.attribution.metrics.first());
                        td.num { (lift_text(first.and_then(|i| i.measured.as_ref())))
                            @if p.look.as_ref().is_some_and(|l| !l.final_look) && p.ended_at.is_none() { " " span.muted { "(so far)" } } }
                        td { (p.look.as_ref()
                            .and_then(|l| l.results.health.iter().find(|h| h.check == strata_model::holdout::CONTAMINATION_CHECK))
                            .map(|h| h.status.as_str()).unwrap_or("–")) }
                    }
                }
            }
        } }
    }
}

async fn holdout_page(
    state: &PortalState,
    v: &Viewer,
    flash: Flash,
) -> Result<Response, PortalError> {
    let impact = HoldoutService::new(state.app.clone())
        .impact(&v.actor())
        .await?;
    let current = impact.holdout.as_ref().filter(|h| h.percent > 0.0);
    let running = impact.periods.iter().find(|p| p.ended_at.is_none());
    let kept = |name: &str, stored: String| {
        if flash.kept(name).is_empty() {
            stored
        } else {
            flash.kept(name).to_owned()
        }
    };
    let body = html! {
        h1 { "Global holdout" }
        p.muted { "A share of units kept out of every experiment that respects the holdout, and out of every winner shipped, to measure what everything shipped adds up to." }
        (flash.show())
        @match &current {
            Some(h) => p #holdout {
                "Holding out " strong { (h.percent) " %" } " of units (salt " code { (h.salt) } ")"
                @if let Some(start) = &h.period_started_at { ", period " (h.period) " since " (when(start)) }
                ". "
                @match &h.next_rotation_at {
                    Some(t) => { "Rotated every " (h.rotate_every_days.unwrap_or(0)) " days; next rotation " (when(t)) "." }
                    None => "Rotated by hand.",
                }
            },
            None => p #holdout { "No holdout is set: every unit can enter experiments." },
        }
        h2 { "What everything shipped adds up to" }
        @if impact.key_metrics.is_empty() {
            (notice("warn", "No key metrics are set: the holdout has nothing to measure. Set them below."))
        } @else {
            p.muted { "Key metrics: " (impact.key_metrics.join(", ")) }
        }
        @match running.and_then(|p| p.look.as_ref()) {
            Some(look) => (look_section(look, "Lift of everyone else over the holdout")),
            None => p.muted { "No look at the running period yet: the scheduled analysis takes one every day (or at a refresh)." },
        }
        @if !impact.periods.is_empty() {
            h2 { "Periods" }
            p.muted { "A period runs from the holdout's salt or size being set to its next change; an ended period's final look covers all of it." }
            (history(&impact.periods))
        }
        @if may(v, Perm::HoldoutWrite, None) {
            h2 { "Settings" }
            form.stack method="post" action="/holdout" {
                (csrf_field(v))
                label for="percent" { "Percent held out (0 disables)" }
                input #percent name="percent" inputmode="decimal"
                    value=(kept("percent", impact.holdout.as_ref().map(|h| h.percent.to_string()).unwrap_or_default()));
                label for="rotate_every_days" { "Rotate every … days (0: by hand only)" }
                input #rotate_every_days name="rotate_every_days" inputmode="numeric"
                    value=(kept("rotate_every_days", impact.holdout.as_ref().and_then(|h| h.rotate_every_days).map(|d| d.to_string()).unwrap_or_default()));
                label { span { input type="checkbox" name="rotate" value="yes"; " Rotate the salt now: a new set of units is held out and a new period starts" } }
                div { button.primary type="submit" { "Save" } }
            }
        }
        @if may(v, Perm::MetricsWrite, None) {
            form.stack method="post" action="/holdout/key-metrics" {
                (csrf_field(v))
                label for="key_metrics" { "Key metrics (metric keys of the registry, comma-separated; the first is the primary)" }
                input #key_metrics name="key_metrics" value=(kept("key_metrics", impact.key_metrics.join(", ")));
                div { button type="submit" { "Save key metrics" } }
            }
        }
    };
    Ok(shell("Global holdout", Some(v), Nav::Platform("/holdout"), body).into_response())
}

/// A number typed in a form field, or none when empty.
fn number<T: std::str::FromStr>(
    f: &[(String, String)],
    name: &str,
) -> Result<Option<T>, ServiceError> {
    let text = field(f, name).trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<T>().map(Some).map_err(|_| {
        ServiceError::validation(name, format!("{name} must be a number, got {text:?}"))
    })
}

/// `POST /holdout`.
pub async fn set_holdout(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let change = number::<f64>(&f, "percent")
        .and_then(|p| match p {
            Some(p) if !p.is_finite() => Err(ServiceError::validation(
                "percent",
                format!("percent must be a number, got {p}"),
            )),
            p => Ok(p),
        })
        .and_then(|percent| {
            Ok(HoldoutChange {
                percent,
                rotate: field(&f, "rotate") == "yes",
                rotate_every_days: number::<u32>(&f, "rotate_every_days")?,
            })
        });
    let r = match change {
        Ok(c) => {
            RegistryService::new(state.app.clone())
                .set_holdout(&viewer.actor(), c)
                .await
        }
        Err(e) => Err(e),
    };
    after(r, "/holdout", "holdout saved", fields(&f), |fl| {
        holdout_page(&state, &viewer, fl)
    })
    .await
}

/// `POST /holdout/key-metrics`.
pub async fn set_key_metrics(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let metrics: Vec<String> = field(&f, "key_metrics")
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let r = RegistryService::new(state.app.clone())
        .set_key_metrics(&viewer.actor(), metrics)
        .await;
    after(r, "/holdout", "key metrics saved", fields(&f), |fl| {
        holdout_page(&state, &viewer, fl)
    })
    .await
}
