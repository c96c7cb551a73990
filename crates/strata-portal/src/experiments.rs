//! The experiments list, one experiment's page and its lifecycle buttons.
//!
//! Every read and every action is a call of `ExperimentService` (or
//! `ResultsService` for the badges) with the signed-in token as the actor:
//! what the list filters, what a button may do and what it is refused are
//! exactly the API's. A button is shown only when the lifecycle allows the
//! action from the current status and the permission table grants it to
//! the viewer on the experiment's team.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use strata_model::results::{LookSummary, Verdict};
use strata_server::auth::Perm;
use strata_server::model::{ExperimentRecord, Status};
use strata_server::service::lifecycle::{self, Action};
use strata_server::service::{
    permissions, ActParams, ExperimentFilter, ExperimentService, LayerService, ResultsService,
};
use strata_server::store::AuditEntry;

use crate::page::{
    age, csrf_field, may, notice, refusal, shell, status_badge, when, Nav, PortalError,
};
use crate::session::Viewer;
use crate::PortalState;

/// Experiments per page of the list.
pub const PAGE_SIZE: usize = 50;
/// Audit entries shown on an experiment's timeline.
const TIMELINE: i64 = 200;

/// Filters of `GET /experiments`; an empty field is no filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    layer: String,
    #[serde(default)]
    surface: String,
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

impl ListQuery {
    /// The query string of this filter at page `page`.
    fn href(&self, page: usize) -> String {
        let pairs = [
            ("status", self.status.as_str()),
            ("team", self.team.as_str()),
            ("layer", self.layer.as_str()),
            ("surface", self.surface.as_str()),
            ("q", self.q.as_str()),
        ];
        let mut out: Vec<(&str, String)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        if page > 1 {
            out.push(("page", page.to_string()));
        }
        match serde_urlencoded::to_string(&out) {
            Ok(q) if !q.is_empty() => format!("/experiments?{q}"),
            _ => "/experiments".to_owned(),
        }
    }
}

/// `Some(v)` unless `v` is empty.
fn opt(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// `GET /experiments`: search, filters and pages of experiments.
pub async fn list(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, PortalError> {
    let actor = viewer.actor();
    let statuses = match opt(&q.status) {
        Some(s) => Some(vec![Status::parse(&s).ok_or_else(|| {
            PortalError::BadRequest(format!("unknown status {s:?}"))
        })?]),
        None => None,
    };
    let page = q.page.unwrap_or(1).max(1);
    let filter = ExperimentFilter {
        statuses,
        layer: opt(&q.layer),
        owner_team: opt(&q.team),
        surface: opt(&q.surface),
        text: opt(&q.q),
        limit: PAGE_SIZE,
        offset: (page - 1).saturating_mul(PAGE_SIZE),
        ..ExperimentFilter::default()
    };
    let found = ExperimentService::new(state.app.clone())
        .list(&actor, &filter)
        .await?;
    let summaries = ResultsService::new(state.app.clone())
        .latest_summaries(&actor, &found.items)
        .await?;
    let layers = LayerService::new(state.app.clone()).keys(&actor).await?;
    let pages = found.total.div_ceil(PAGE_SIZE).max(1);
    let now = chrono::DateTime::<chrono::Utc>::from(strata_clock::now());
    let filtered = filter
        != ExperimentFilter {
            limit: PAGE_SIZE,
            offset: filter.offset,
            ..ExperimentFilter::default()
        };
    let body = html! {
        h1 { "Experiments" }
        @if may(&viewer, Perm::ExperimentsWrite, None) {
            p { a.button.primary href="/experiments/new" { "New experiment" } }
        }
        form.filters method="get" action="/experiments" role="search" {
            label { "Search" input type="search" name="q" value=(q.q) placeholder="key, name or hypothesis"; }
            label { "Status"
                select name="status" {
                    option value="" selected[q.status.is_empty()] { "any" }
                    @for s in Status::ALL { option value=(s.as_str()) selected[q.status == s.as_str()] { (s.as_str()) } }
                }
            }
            label { "Team" input type="text" name="team" value=(q.team) size="12"; }
            label { "Layer"
                select name="layer" {
                    option value="" selected[q.layer.is_empty()] { "any" }
                    @for l in &layers { option value=(l) selected[&q.layer == l] { (l) } }
                }
            }
            label { "Surface" input type="text" name="surface" value=(q.surface) size="12"; }
            button type="submit" { "Filter" }
            @if filtered { a href="/experiments" { "Clear" } }
        }
        p.muted #count { (found.total) " experiment" @if found.total != 1 { "s" } @if filtered { " match" } }
        @if found.items.is_empty() {
            @if filtered {
                (notice("info", "no experiment matches these filters"))
            } @else {
                (notice("info", "no experiments yet: create one with the API (POST /api/v1/experiments) or the CLI"))
            }
        } @else {
            div.table-wrap {
                table #experiments {
                    thead { tr {
                        th scope="col" { "Experiment" }
                        th scope="col" { "Status" }
                        th.num scope="col" { "Ramp" }
                        th scope="col" { "Layer" }
                        th scope="col" { "Team" }
                        th.hide-narrow scope="col" { "Age" }
                        th scope="col" { "Health" }
                        th scope="col" { "Decision" }
                    } }
                    tbody {
                        @for e in &found.items {
                            tr {
                                td { a href={"/experiments/" (e.key)} { (e.name) } br; span.muted { (e.key) } }
                                td { (status_badge(e.status)) }
                                td.num { (fmt_percent(e.ramp_percent)) }
                                td { (layer_cell(e)) }
                                td { (e.owner_team) }
                                td.hide-narrow { (age(e.started_at.as_deref().unwrap_or(&e.created_at), now)) }
                                (summary_cells(summaries.get(&e.key).map(|l| &l.summary), e.status))
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page > 1 { a rel="prev" href=(q.href(page - 1)) { "← Previous" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a rel="next" href=(q.href(page + 1)) { "Next →" } }
            }
        }
    };
    Ok(shell("Experiments", Some(&viewer), Nav::Experiments, body).into_response())
}

/// `12.5 %`.
fn fmt_percent(p: f64) -> String {
    let s = format!("{p:.1}");
    format!("{} %", s.strip_suffix(".0").unwrap_or(&s))
}

/// `main [0, 500)`, or `–`.
fn layer_cell(e: &ExperimentRecord) -> Markup {
    html! {
        @match (&e.layer, e.range) {
            (Some(l), Some([a, b])) => { (l) " " span.muted { "[" (a) ", " (b) ")" } }
            (Some(l), None) => { (l) }
            _ => { "–" }
        }
    }
}

/// The health and decision cells of a row. An experiment that has ended
/// (killed, concluded, archived) shows no advice to keep it running: its
/// last look's verdict is about data, not an action left to take.
fn summary_cells(s: Option<&LookSummary>, status: Status) -> Markup {
    let ended = matches!(
        status,
        Status::Killed | Status::Concluded | Status::Archived
    );
    html! {
        @match s {
            Some(s) => {
                td { @match s.health {
                    Some(h) => span class={"badge health-" (h.as_str())} { (h.as_str()) },
                    None => span.muted { "–" },
                } }
                td { @match s.verdict {
                    Some(Verdict::KeepRunning) if ended => span.muted title={"the experiment is " (status.as_str()) "; its last look said keep running"} { "ended" },
                    Some(v) => span class={"badge verdict-" (v.as_str())} { (v.as_str().replace('_', " ")) },
                    None => span.muted { "–" },
                } }
            }
            None => { td.muted { "no look" } td.muted { "–" } }
        }
    }
}

/// Query of `GET /experiments/{key}`.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    /// The action just done, to confirm it.
    done: Option<String>,
}

/// `GET /experiments/{key}`: definition, lifecycle, ramp plan, timeline.
pub async fn show(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PortalError> {
    let done = match q.done.as_deref() {
        Some("create") => {
            Some("done: draft created; submit it when its definition is final".to_owned())
        }
        other => other
            .and_then(Action::parse)
            .map(|a| format!("done: {}", past(a))),
    };
    render_show(&state, &viewer, &key, StatusCode::OK, done.as_deref(), None).await
}

/// `start` → `started`.
fn past(a: Action) -> &'static str {
    match a {
        Action::Submit => "submitted",
        Action::Approve => "approved",
        Action::Start => "started",
        Action::Ramp => "ramped",
        Action::Pause => "paused",
        Action::Resume => "resumed",
        Action::Kill => "killed",
        Action::Conclude => "concluded",
        Action::Archive => "archived",
    }
}

/// The experiment page, with a confirmation or an error of the last action.
async fn render_show(
    state: &PortalState,
    viewer: &Viewer,
    key: &str,
    status: StatusCode,
    ok: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PortalError> {
    let actor = viewer.actor();
    let service = ExperimentService::new(state.app.clone());
    let e = service.get(&actor, key).await?;
    let audit = service.audit(&actor, key, TIMELINE).await?;
    let team = Some(e.owner_team.as_str());
    let body = html! {
        p.muted { a href="/experiments" { "Experiments" } " / " (e.key) }
        h1 { (e.name) " " (status_badge(e.status)) }
        p.muted { "Team " (e.owner_team) " · created by " (e.created_by) " on " (when(&e.created_at))
            @if let Some(s) = &e.started_at { " · started " (when(s)) } }
        @if may(viewer, Perm::ResultsRead, team) {
            p { a href={"/experiments/" (e.key) "/results"} { "Results →" } }
        }
        @if let Some(m) = ok { (notice("ok", m)) }
        @if let Some(m) = error { (notice("error", m)) }
        (lifecycle_buttons(viewer, &e))
        @if let Some(r) = &e.kill_reason { (notice("error", &format!("killed: {r}"))) }
        h2 { "Ramp" }
        p { "Assigning " strong { (fmt_percent(e.ramp_percent)) } " of the experiment's range." }
        @if !e.ramp_plan.is_empty() {
            ol #ramp-plan {
                @for s in &e.ramp_plan {
                    li {
                        (fmt_percent(s.percent))
                        @if let Some(h) = s.min_hours { " for at least " (h) " h" }
                        @if e.ramp_percent >= s.percent && e.status.is_started() { " ✓" span.muted { " reached" } }
                    }
                }
            }
        }
        h2 { "Definition" }
        (definition(&e))
        h2 { "Timeline" }
        (timeline(&audit))
    };
    Ok((status, shell(&e.name, Some(viewer), Nav::Experiments, body)).into_response())
}

/// The buttons of the actions the lifecycle allows now and the viewer may
/// use on this experiment.
fn lifecycle_buttons(v: &Viewer, e: &ExperimentRecord) -> Markup {
    let team = Some(e.owner_team.as_str());
    let allowed: Vec<Action> = Action::ALL
        .into_iter()
        .filter(|a| lifecycle::next(e.status, e.requires_approval, *a).is_some())
        .filter(|a| may(v, a.permission(), team))
        .collect();
    let action_url = |a: Action| format!("/experiments/{}/actions/{}", e.key, a.as_str());
    html! {
        @if !allowed.is_empty() {
            div.actions #lifecycle {
                @for a in &allowed {
                    @match a {
                        Action::Kill => {
                            a.button.danger href={"/experiments/" (e.key) "/kill"} { "Kill…" }
                        }
                        Action::Start | Action::Ramp => {
                            form method="post" action=(action_url(*a)) {
                                (csrf_field(v))
                                input type="hidden" name="revision" value=(e.revision);
                                label { "Ramp %"
                                    input type="number" name="ramp_percent" min="0.1" max="100" step="0.1"
                                        size="5" required[*a == Action::Ramp]
                                        value=[(*a == Action::Ramp).then(|| next_ramp(e))]; }
                                button.primary type="submit" { (title(*a)) }
                            }
                        }
                        Action::Pause => {
                            form method="post" action=(action_url(*a)) {
                                (csrf_field(v))
                                input type="hidden" name="revision" value=(e.revision);
                                label { "Reason" input type="text" name="reason" size="18"; }
                                button type="submit" { "Pause" }
                            }
                        }
                        Action::Conclude => {
                            form method="post" action=(action_url(*a)) {
                                (csrf_field(v))
                                input type="hidden" name="revision" value=(e.revision);
                                label { "Winner"
                                    select name="winner" {
                                        option value="" { "none (revert)" }
                                        @for var in &e.variants { option value=(var.key) { (var.key) } }
                                    }
                                }
                                button type="submit" { "Conclude" }
                            }
                        }
                        _ => {
                            form method="post" action=(action_url(*a)) {
                                (csrf_field(v))
                                input type="hidden" name="revision" value=(e.revision);
                                button type="submit" { (title(*a)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The ramp a running experiment goes to next: its plan's next stage, else
/// the current ramp.
fn next_ramp(e: &ExperimentRecord) -> String {
    let next = e
        .ramp_plan
        .iter()
        .map(|s| s.percent)
        .find(|p| *p > e.ramp_percent)
        .unwrap_or(e.ramp_percent);
    format!("{next}")
}

/// `Start`, `Ramp`, …
fn title(a: Action) -> &'static str {
    match a {
        Action::Submit => "Submit",
        Action::Approve => "Approve",
        Action::Start => "Start",
        Action::Ramp => "Ramp",
        Action::Pause => "Pause",
        Action::Resume => "Resume",
        Action::Kill => "Kill",
        Action::Conclude => "Conclude",
        Action::Archive => "Archive",
    }
}

/// The pre-registered definition.
fn definition(e: &ExperimentRecord) -> Markup {
    let list = |v: &[String]| {
        if v.is_empty() {
            "–".to_owned()
        } else {
            v.join(", ")
        }
    };
    html! {
        dl.def #definition {
            dt { "Key" } dd { code { (e.key) } " (flag " code { (e.flag) } ")" }
            dt { "Hypothesis" } dd { (e.hypothesis) }
            @if !e.description.is_empty() { dt { "Description" } dd { (e.description) } }
            dt { "Unit" } dd { (e.unit)
                @if let Some(f) = &e.fallback_unit { span.muted { ", else " (f) } }
                @if e.sticky { " · sticky" }
                @if e.include_bots { " · bots included" } }
            dt { "Variants" } dd {
                @for (i, v) in e.variants.iter().enumerate() {
                    @if i > 0 { ", " }
                    (v.key) " (" (v.weight) ")"
                    @if i == e.control_index() { span.muted { " control" } }
                }
            }
            dt { "Layer" } dd { (layer_cell(e)) }
            dt { "Surfaces" } dd { (if e.surfaces.is_empty() { "all".to_owned() } else { e.surfaces.join(", ") }) }
            dt { "Targeting" } dd {
                @match &e.targeting {
                    Some(t) => pre.diff { (serde_json::to_string_pretty(t).unwrap_or_default()) },
                    None => "everyone",
                }
            }
            dt { "Primary metric" } dd { (e.primary_metric) }
            dt { "Secondary metrics" } dd { (list(&e.secondary_metrics)) }
            dt { "Guardrails" } dd { (list(&e.guardrails)) }
            dt { "MDE" } dd { (e.mde) }
            dt { "Planned units" } dd { (e.planned_units) }
            dt { "Alpha" } dd { (e.alpha) }
            dt { "Minimum duration" } dd { (e.min_duration_days) " days" }
            dt { "Approval" } dd { (if e.requires_approval { "required" } else { "not required" })
                @if let Some(a) = &e.approved_by { " · approved by " (a) } }
            dt { "Global holdout" } dd { (if e.respect_holdout { "respected" } else { "ignored" }) }
            @if let Some(w) = &e.winner { dt { "Winner" } dd { (w) } }
        }
    }
}

/// The audit trail: who did what when, with the fields each change moved.
fn timeline(entries: &[AuditEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted { "nothing recorded yet" }
        } @else {
            ol.timeline #timeline {
                @for a in entries {
                    li {
                        strong { (a.action.strip_prefix("experiment.").unwrap_or(&a.action)) }
                        " by " (a.actor) " · " span.muted { (when(&a.at)) }
                        @if let Some(v) = a.version { span.muted { " · config v" (v) } }
                        @if let Some(d) = &a.detail { br; span { (d) } }
                        @let changes = diff(a.before.as_ref(), a.after.as_ref());
                        @if !changes.is_empty() {
                            details {
                                summary { (changes.len()) " field" @if changes.len() != 1 { "s" } " changed" }
                                ul.diff {
                                    @for (field, before, after) in &changes {
                                        li { (field) ": " del { (before) } " → " ins { (after) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fields that change with every write and say nothing of the change.
const BOOKKEEPING: [&str; 3] = ["revision", "updated_at", "version"];

/// The top-level fields that differ between `before` and `after`, with
/// both values as compact JSON (`–` for absent).
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Vec<(String, String, String)> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    if before.is_none() {
        // A creation: the definition is on the page already.
        return Vec::new();
    }
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "–".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    keys.into_iter()
        .filter(|k| !BOOKKEEPING.contains(&k.as_str()))
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| (k.clone(), show(b.get(k)), show(a.get(k))))
        .collect()
}

/// `GET /experiments/{key}/kill`: the confirmation before a kill.
pub async fn confirm_kill(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, PortalError> {
    render_kill(&state, &viewer, &key, StatusCode::OK, None).await
}

/// The kill confirmation page.
async fn render_kill(
    state: &PortalState,
    viewer: &Viewer,
    key: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PortalError> {
    let e = ExperimentService::new(state.app.clone())
        .get(&viewer.actor(), key)
        .await?;
    // The 403 of a page the role may not use is audited, as the API's is.
    permissions::authorize(
        &state.app.store,
        &viewer.actor(),
        Perm::ExperimentsKill,
        Some(&e.owner_team),
    )
    .await?;
    let body = html! {
        p.muted { a href="/experiments" { "Experiments" } " / " a href={"/experiments/" (e.key)} { (e.key) } " / kill" }
        h1 { "Kill " (e.name) "?" }
        p { "Killing stops the experiment at once: every unit gets the control experience, SDKs learn it within seconds, and it cannot be resumed. Use it when the change does harm; to stop and decide later, pause instead." }
        @if let Some(m) = error { (notice("error", m)) }
        form.stack method="post" action={"/experiments/" (e.key) "/actions/kill"} {
            (csrf_field(viewer))
            input type="hidden" name="revision" value=(e.revision);
            label for="reason" { "Reason (audited, shown on the experiment)" }
            textarea #reason name="reason" rows="3" required {}
            label { span { input type="checkbox" name="confirm" value="yes" required; " I understand this stops " (e.key) " for every unit" } }
            div.actions {
                button.danger type="submit" { "Kill experiment" }
                a href={"/experiments/" (e.key)} { "Cancel" }
            }
        }
    };
    Ok((status, shell("Kill", Some(viewer), Nav::Experiments, body)).into_response())
}

/// A lifecycle form.
#[derive(Debug, Default, Deserialize)]
pub struct ActForm {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    ramp_percent: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    winner: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /experiments/{key}/actions/{action}`: one lifecycle action.
pub async fn act(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path((key, action)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Result<Response, PortalError> {
    let action = Action::parse(&action).ok_or(PortalError::NotFound)?;
    if action == Action::Kill && f.confirm != "yes" {
        return render_kill(
            &state,
            &viewer,
            &key,
            StatusCode::BAD_REQUEST,
            Some("tick the confirmation to kill the experiment"),
        )
        .await;
    }
    let params = match parse_params(&f) {
        Ok(p) => p,
        Err(m) => {
            return render_show(
                &state,
                &viewer,
                &key,
                StatusCode::BAD_REQUEST,
                None,
                Some(&m),
            )
            .await
        }
    };
    let done = ExperimentService::new(state.app.clone())
        .act(&viewer.actor(), &key, action, params)
        .await;
    match done {
        Ok(e) => Ok(
            Redirect::to(&format!("/experiments/{}?done={}", e.key, action.as_str()))
                .into_response(),
        ),
        // Refusals the person can act on are shown on the page they came
        // from; a missing permission or experiment is its own page.
        Err(err) => {
            let (status, message) = refusal(err)?;
            if action == Action::Kill {
                render_kill(&state, &viewer, &key, status, Some(&message)).await
            } else {
                render_show(&state, &viewer, &key, status, None, Some(&message)).await
            }
        }
    }
}

/// The service's inputs from a form (fields left empty are absent).
fn parse_params(f: &ActForm) -> Result<ActParams, String> {
    let revision = match opt(&f.revision) {
        Some(r) => Some(
            r.parse::<i64>()
                .map_err(|_| format!("revision must be a whole number, got {r:?}"))?,
        ),
        None => None,
    };
    let ramp_percent = match opt(&f.ramp_percent) {
        Some(r) => Some(
            r.parse::<f64>()
                .ok()
                .filter(|p| p.is_finite())
                .ok_or_else(|| format!("ramp_percent must be a number, got {r:?}"))?,
        ),
        None => None,
    };
    Ok(ActParams {
        revision,
        ramp_percent,
        reason: opt(&f.reason),
        winner: opt(&f.winner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_changed_fields_but_not_bookkeeping() {
        let b = json!({"status": "draft", "revision": 1, "ramp_percent": 0.0, "name": "x"});
        let a = json!({"status": "running", "revision": 2, "ramp_percent": 10.0, "name": "x", "started_at": "t"});
        assert_eq!(
            diff(Some(&b), Some(&a)),
            vec![
                ("ramp_percent".into(), "0.0".into(), "10.0".into()),
                ("started_at".into(), "–".into(), "t".into()),
                ("status".into(), "draft".into(), "running".into()),
            ]
        );
        assert!(diff(None, Some(&a)).is_empty());
    }

    #[test]
    fn list_links_keep_the_filters() {
        let q = ListQuery {
            status: "running".into(),
            q: "a b".into(),
            ..ListQuery::default()
        };
        assert_eq!(q.href(2), "/experiments?status=running&q=a+b&page=2");
        assert_eq!(ListQuery::default().href(1), "/experiments");
    }

    #[test]
    fn params_parse_or_say_which_field() {
        let f = ActForm {
            revision: "3".into(),
            ramp_percent: "12.5".into(),
            reason: " ".into(),
            ..ActForm::default()
        };
        let p = parse_params(&f).unwrap();
        assert_eq!(
            (p.revision, p.ramp_percent, p.reason),
            (Some(3), Some(12.5), None)
        );
        let bad = ActForm {
            ramp_percent: "lots".into(),
            ..ActForm::default()
        };
        assert!(parse_params(&bad).unwrap_err().contains("ramp_percent"));
        assert_eq!(fmt_percent(12.0), "12 %");
        assert_eq!(fmt_percent(0.5), "0.5 %");
    }
}
