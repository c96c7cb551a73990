//! The platform's shared things: layers, the metric registry and its bot
//! detection limits, guardrail definitions, the audit log, API keys and
//! alert webhooks (the global holdout has its own module, `holdout`). Each page reads through its service and shows the forms of
//! the changes the viewer's role may make; every change is that service's
//! (`LayerService`, `RegistryService`, `AdminService`, `AlertService`), so
//! its validation, permission and audit are the API's.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use strata_server::auth::Perm;
use strata_server::model::{GuardrailDef, LayerRequest, MetricDef};
use strata_server::service::admin::{AuditParams, KeyRequest};
use strata_server::service::alerts::{WebhookRequest, EVENTS};
use strata_server::service::registry::{Kind, RegistryService};
use strata_server::service::{permissions, AdminService, AlertService, LayerService, ServiceError};

use crate::page::{csrf_field, field, fields, may, notice, refusal, shell, when, Nav, PortalError};
use crate::session::Viewer;
use crate::wizard::utilisation;
use crate::PortalState;

/// What a page shows after a change: a confirmation, or the refusal with
/// what was typed.
#[derive(Debug, Default)]
pub struct Flash {
    ok: Option<String>,
    error: Option<String>,
    /// The form as typed, to fill it again after a refusal.
    kept: Vec<(String, String)>,
}

impl Flash {
    pub(crate) fn kept(&self, name: &str) -> &str {
        field(&self.kept, name)
    }

    pub(crate) fn show(&self) -> Markup {
        html! {
            @if let Some(m) = &self.ok { (notice("ok", m)) }
            @if let Some(m) = &self.error { (notice("error", m)) }
        }
    }
}

/// `?done=…` of a page after a change.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
}

impl Done {
    pub(crate) fn flash(self) -> Flash {
        Flash {
            ok: self.done.map(|d| format!("done: {d}")),
            ..Flash::default()
        }
    }
}

/// After a change: back to `to` with its confirmation, or the page again
/// with the refusal.
pub(crate) async fn after<T, F, Fut>(
    result: Result<T, ServiceError>,
    to: &str,
    done: &str,
    kept: Vec<(String, String)>,
    page: F,
) -> Result<Response, PortalError>
where
    F: FnOnce(Flash) -> Fut,
    Fut: std::future::Future<Output = Result<Response, PortalError>>,
{
    match result {
        Ok(_) => {
            let q = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
            Ok(Redirect::to(&format!("{to}?{q}")).into_response())
        }
        Err(e) => {
            let (status, message) = refusal(e)?;
            let mut res = page(Flash {
                ok: None,
                error: Some(message),
                kept,
            })
            .await?;
            *res.status_mut() = status;
            Ok(res)
        }
    }
}

// ---------------------------------------------------------------- layers

/// `GET /layers`.
pub async fn layers(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    layers_page(&state, &viewer, d.flash()).await
}

async fn layers_page(
    state: &PortalState,
    v: &Viewer,
    flash: Flash,
) -> Result<Response, PortalError> {
    let layers = LayerService::new(state.app.clone())
        .list(&v.actor())
        .await?;
    let body = html! {
        h1 { "Layers" }
        p.muted { "Experiments in one layer never share a unit (each holds its own range of the layer's 1000 buckets); experiments in different layers are independent." }
        (flash.show())
        @for l in &layers {
            section.card {
                h2 { (l.layer.key) " " span.muted { (format!("{:.0} % held", l.utilisation * 100.0)) } }
                @if !l.layer.description.is_empty() { p { (l.layer.description) } }
                (utilisation(l))
                @if !l.allocated.is_empty() {
                    div.table-wrap { table {
                        thead { tr { th scope="col" { "Experiment" } th scope="col" { "Range" } th scope="col" { "Status" } th scope="col" { "Back in the pool" } } }
                        tbody { @for a in &l.allocated { tr {
                            td { a href={"/experiments/" (a.experiment)} { (a.experiment) } }
                            td { "[" (a.range[0]) ", " (a.range[1]) ")" }
                            td { (a.status) }
                            td { (a.reserved_until.as_deref().map(when).unwrap_or_else(|| "–".to_owned())) }
                        } } }
                    } }
                }
            }
        }
        @if may(v, Perm::LayersWrite, None) {
            h2 { "New layer" }
            form.stack method="post" action="/layers" {
                (csrf_field(v))
                label for="layer-key" { "Key" }
                input #layer-key name="key" required value=(flash.kept("key"));
                label for="layer-description" { "Description" }
                input #layer-description name="description" value=(flash.kept("description"));
                div { button.primary type="submit" { "Create layer" } }
            }
        }
    };
    Ok(shell("Layers", Some(v), Nav::Platform("/layers"), body).into_response())
}

/// `POST /layers`.
pub async fn create_layer(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let req = LayerRequest {
        key: field(&f, "key").trim().to_owned(),
        description: field(&f, "description").trim().to_owned(),
    };
    let key = req.key.clone();
    let r = LayerService::new(state.app.clone())
        .create(&viewer.actor(), req)
        .await;
    after(
        r,
        "/layers",
        &format!("layer {key} created"),
        fields(&f),
        |fl| layers_page(&state, &viewer, fl),
    )
    .await
}

// ---------------------------------------------------- metrics and guardrails

/// An example definition for the forms.
const METRIC_EXAMPLE: &str =
    r#"{"key": "checkout_conversion", "type": "binomial", "filter": {"type": "purchase"}}"#;
const GUARDRAIL_EXAMPLE: &str = r#"{"key": "checkout_errors", "metric": "error_rate", "threshold": 0.01, "direction": "increase_is_bad", "window_minutes": 15, "min_samples": 500, "auto_action": "kill", "applies_to": "all"}"#;

/// `GET /registry`.
pub async fn metrics(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    definitions_page(&state, &viewer, Kind::Metric, d.flash()).await
}

/// `GET /guardrails`.
pub async fn guardrails(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    definitions_page(&state, &viewer, Kind::Guardrail, d.flash()).await
}

/// The page of metrics or of guardrail definitions.
async fn definitions_page(
    state: &PortalState,
    v: &Viewer,
    kind: Kind,
    flash: Flash,
) -> Result<Response, PortalError> {
    let registry = RegistryService::new(state.app.clone());
    let defs = registry.list(&v.actor(), kind).await?;
    let bots = match kind {
        Kind::Metric => Some(registry.get_bot_detection(&v.actor()).await?),
        Kind::Guardrail => None,
    };
    let (title, path, perm, example) = match kind {
        Kind::Metric => (
            "Metric registry",
            "/registry",
            Perm::MetricsWrite,
            METRIC_EXAMPLE,
        ),
        Kind::Guardrail => (
            "Guardrails",
            "/guardrails",
            Perm::GuardrailsWrite,
            GUARDRAIL_EXAMPLE,
        ),
    };
    let writable = may(v, perm, None);
    let body = html! {
        h1 { (title) }
        @match kind {
            Kind::Metric => p.muted { "What experiments measure, defined once: the analysis and the guardrail monitor compile these definitions. A metric is edited or deleted only while no experiment (that is not archived) and no guardrail relies on it; otherwise create a new one." },
            Kind::Guardrail => p.muted { "Metrics watched on recent data while experiments run, with the threshold, direction and the action on a breach (kill, pause, alert, or await approval); those that apply to all apply to every running experiment." },
        }
        (flash.show())
        @if defs.is_empty() {
            p.muted { "none yet" }
        } @else {
            div.table-wrap { table #definitions {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Definition" } th.hide-narrow scope="col" { "Created" }
                    @if writable { th scope="col" { span.muted { "Delete" } } } } }
                tbody { @for d in &defs {
                    @let key = d.get("key").and_then(Value::as_str).unwrap_or_default();
                    tr {
                        th scope="row" { (key) }
                        td { code.diff { (compact(d)) } }
                        td.hide-narrow { (d.get("created_at").and_then(Value::as_str).map(when).unwrap_or_default()) }
                        @if writable {
                            td { @if kind == Kind::Metric { a href={"/registry/" (key) "/edit"} { "Edit" } " " }
                                form method="post" action={(path) "/" (key) "/delete"} {
                                (csrf_field(v))
                                button type="submit" aria-label={"delete " (key)} { "Delete" }
                            } }
                        }
                    }
                } }
            } }
        }
        @if let Some(b) = &bots {
            h2 #bots { "Bot detection" }
            p.muted { "Units whose events of one type go over these limits in a UTC minute or day are left out of every analysis, counted per variant (a null limit is none). The defaults apply until changed; the next look applies a change." }
            p #bot-limits {
                code.diff { (serde_json::to_string(&b.limits).unwrap_or_default()) }
                " "
                span.muted { @match &b.updated_at { Some(t) => { "revision " (b.revision) ", changed " (when(t)) }, None => { "the defaults" } } }
            }
            @if writable {
                form.stack method="post" action="/registry/bot-detection" {
                    (csrf_field(v))
                    label for="bot_detection" { "Limits (JSON, as " code { "PUT /api/v1/bot-detection" } " takes them)" }
                    textarea #bot_detection name="bot_detection" rows="3" required {
                        @if flash.kept("bot_detection").is_empty() { (serde_json::to_string(&b.limits).unwrap_or_default()) } @else { (flash.kept("bot_detection")) }
                    }
                    div { button type="submit" { "Save limits" } }
                }
            }
        }
        @if writable {
            h2 { "New definition" }
            form.stack method="post" action=(path) {
                (csrf_field(v))
                label for="definition" { "Definition (JSON, as " code { "POST /api/v1/" (kind.as_str()) "s" } " takes it; see docs/api.md)" }
                textarea #definition name="definition" rows="6" required {
                    @if flash.kept("definition").is_empty() { (example) } @else { (flash.kept("definition")) }
                }
                div { button.primary type="submit" { "Create" } }
            }
        }
    };
    Ok(shell(title, Some(v), Nav::Platform(path), body).into_response())
}

/// A stored definition without its bookkeeping, as one line of JSON.
fn compact(d: &Value) -> String {
    let mut d = d.clone();
    if let Some(o) = d.as_object_mut() {
        for k in ["key", "revision", "created_at"] {
            o.remove(k);
        }
    }
    d.to_string()
}

/// `POST /registry` and `POST /guardrails`.
async fn create_definition(
    state: PortalState,
    viewer: Viewer,
    kind: Kind,
    f: Vec<(String, String)>,
) -> Result<Response, PortalError> {
    let text = field(&f, "definition");
    let registry = RegistryService::new(state.app.clone());
    let actor = viewer.actor();
    // The role first: a definition is read only for those who may create it.
    let perm = if kind == Kind::Metric {
        Perm::MetricsWrite
    } else {
        Perm::GuardrailsWrite
    };
    permissions::authorize(&state.app.store, &actor, perm, None).await?;
    let result = match kind {
        Kind::Metric => match serde_json::from_str::<MetricDef>(text) {
            Ok(def) => registry.create_metric(&actor, def).await,
            Err(e) => Err(ServiceError::validation(
                "definition",
                format!("the definition is not a metric: {e}"),
            )),
        },
        Kind::Guardrail => match serde_json::from_str::<GuardrailDef>(text) {
            Ok(def) => registry.create_guardrail(&actor, def).await,
            Err(e) => Err(ServiceError::validation(
                "definition",
                format!("the definition is not a guardrail: {e}"),
            )),
        },
    };
    let path = if kind == Kind::Metric {
        "/registry"
    } else {
        "/guardrails"
    };
    let key = result
        .as_ref()
        .ok()
        .and_then(|v| v.get("key").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    after(
        result,
        path,
        &format!("{} {key} created", kind.as_str()),
        fields(&f),
        |fl| definitions_page(&state, &viewer, kind, fl),
    )
    .await
}

/// `POST /registry`.
pub async fn create_metric(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    create_definition(state, viewer, Kind::Metric, f).await
}

/// `POST /guardrails`.
pub async fn create_guardrail(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    create_definition(state, viewer, Kind::Guardrail, f).await
}

/// `POST /registry/{key}/delete`.
pub async fn delete_metric(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, PortalError> {
    let r = RegistryService::new(state.app.clone())
        .delete(&viewer.actor(), Kind::Metric, &key)
        .await;
    after(
        r,
        "/registry",
        &format!("metric {key} deleted"),
        Vec::new(),
        |fl| definitions_page(&state, &viewer, Kind::Metric, fl),
    )
    .await
}

/// `POST /guardrails/{key}/delete`.
pub async fn delete_guardrail(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, PortalError> {
    let r = RegistryService::new(state.app.clone())
        .delete(&viewer.actor(), Kind::Guardrail, &key)
        .await;
    after(
        r,
        "/guardrails",
        &format!("guardrail {key} deleted"),
        Vec::new(),
        |fl| definitions_page(&state, &viewer, Kind::Guardrail, fl),
    )
    .await
}

/// `GET /registry/{key}/edit`.
pub async fn edit_metric(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, PortalError> {
    edit_metric_page(&state, &viewer, &key, Flash::default()).await
}

async fn edit_metric_page(
    state: &PortalState,
    v: &Viewer,
    key: &str,
    flash: Flash,
) -> Result<Response, PortalError> {
    let actor = v.actor();
    permissions::authorize(&state.app.store, &actor, Perm::MetricsWrite, None).await?;
    let stored = RegistryService::new(state.app.clone())
        .get(&actor, Kind::Metric, key)
        .await?;
    let mut def = stored.clone();
    if let Some(o) = def.as_object_mut() {
        o.remove("revision");
        o.remove("created_at");
    }
    let text = if flash.kept("definition").is_empty() {
        serde_json::to_string_pretty(&def).unwrap_or_default()
    } else {
        flash.kept("definition").to_owned()
    };
    let body = html! {
        p.muted { a href="/registry" { "Metric registry" } " / " (key) }
        h1 { "Edit metric " (key) }
        p.muted { "Refused while an experiment that is not archived, or a guardrail, relies on the metric: their numbers would change meaning." }
        (flash.show())
        form.stack method="post" action={"/registry/" (key) "/edit"} {
            (csrf_field(v))
            label for="definition" { "Definition (JSON)" }
            textarea #definition name="definition" rows="10" required { (text) }
            div.actions { button.primary type="submit" { "Save" } a href="/registry" { "Cancel" } }
        }
    };
    Ok(shell("Edit metric", Some(v), Nav::Platform("/registry"), body).into_response())
}

/// `POST /registry/{key}/edit`.
pub async fn update_metric(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(key): Path<String>,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let registry = RegistryService::new(state.app.clone());
    let r = match serde_json::from_str::<MetricDef>(field(&f, "definition")) {
        Ok(def) => registry.update_metric(&viewer.actor(), &key, def).await,
        Err(e) => Err(ServiceError::validation(
            "definition",
            format!("the definition is not a metric: {e}"),
        )),
    };
    after(
        r,
        "/registry",
        &format!("metric {key} saved"),
        fields(&f),
        |fl| edit_metric_page(&state, &viewer, &key, fl),
    )
    .await
}

/// `POST /registry/bot-detection`: replaces the bot detection limits.
pub async fn set_bot_detection(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let actor = viewer.actor();
    // The role first: a refused change is refused for the role, not the text.
    permissions::authorize(&state.app.store, &actor, Perm::MetricsWrite, None).await?;
    let text = field(&f, "bot_detection");
    // Read as the API reads its body, so a bad limit is named the same way.
    let r = match strata_server::json::parse::<strata_model::BotDetection>(text.as_bytes()) {
        Ok(limits) => {
            RegistryService::new(state.app.clone())
                .set_bot_detection(&actor, limits)
                .await
        }
        Err(e) => Err(ServiceError::validation(
            e.field.unwrap_or_else(|| "bot_detection".to_owned()),
            e.message,
        )),
    };
    after(
        r,
        "/registry",
        "bot detection limits saved",
        fields(&f),
        |fl| definitions_page(&state, &viewer, Kind::Metric, fl),
    )
    .await
}

// ------------------------------------------------------------------- audit

/// Filters of `GET /audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    entity: String,
    #[serde(default)]
    action: String,
    before: Option<i64>,
}

/// Entries per page of the audit log.
const AUDIT_PAGE: i64 = 100;

/// `GET /audit`.
pub async fn audit(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PortalError> {
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let entries = AdminService::new(state.app.clone())
        .audit(
            &viewer.actor(),
            AuditParams {
                entity: opt(&q.entity),
                entity_type: None,
                action: opt(&q.action),
                before: q.before,
                limit: Some(AUDIT_PAGE),
            },
        )
        .await?;
    let next = (entries.len() as i64 == AUDIT_PAGE)
        .then(|| entries.last().map(|e| e.seq))
        .flatten()
        .map(|seq| {
            let q = serde_urlencoded::to_string([
                ("entity", q.entity.as_str()),
                ("action", q.action.as_str()),
                ("before", &seq.to_string()),
            ])
            .unwrap_or_default();
            format!("/audit?{q}")
        });
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/audit" role="search" {
            label { "Entity (" code { "experiment:KEY" } ", or a key)" input name="entity" value=(q.entity); }
            label { "Action (e.g. experiment.kill, denied)" input name="action" value=(q.action); }
            button type="submit" { "Filter" }
        }
        @if entries.is_empty() { p.muted { "no entry matches" } } @else {
            div.table-wrap { table #audit {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "On" } th scope="col" { "Detail" } } }
                tbody { @for e in &entries { tr {
                    td { (when(&e.at)) }
                    td { (e.actor) }
                    td { (e.action) }
                    td { (e.entity_type) " " @if e.entity_type == "experiment" { a href={"/experiments/" (e.entity_key)} { (e.entity_key) } } @else { (e.entity_key) } }
                    td { (e.detail.as_deref().unwrap_or("")) @if let Some(v) = e.version { span.muted { " · config v" (v) } } }
                } } }
            } }
        }
        @if let Some(n) = next { nav.pager { a rel="next" href=(n) { "Older →" } } }
    };
    Ok(shell("Audit log", Some(&viewer), Nav::Platform("/audit"), body).into_response())
}

// -------------------------------------------------------------------- keys

/// `GET /keys`.
pub async fn keys(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    keys_page(&state, &viewer, d.flash(), None).await
}

async fn keys_page(
    state: &PortalState,
    v: &Viewer,
    flash: Flash,
    created: Option<(String, String)>,
) -> Result<Response, PortalError> {
    let keys = AdminService::new(state.app.clone())
        .keys(&v.actor())
        .await?;
    let body = html! {
        h1 { "API keys" }
        (flash.show())
        @if let Some((name, token)) = &created {
            div.notice.notice-ok #new-token role="status" {
                p { "Key " strong { (name) } " created. Its token is shown this once; copy it now:" }
                p { code #token { (token) } }
            }
        }
        div.table-wrap { table #keys {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Role" } th scope="col" { "Team" } th.hide-narrow scope="col" { "Created" } th scope="col" { "State" } } }
            tbody { @for k in &keys { tr {
                th scope="row" { (k.name) br; span.muted { (k.id) } }
                td { (k.kind) } td { (k.role) } td { (k.team) }
                td.hide-narrow { (when(&k.created_at)) " by " (k.created_by) }
                td {
                    @if k.revoked { span.badge.health-fail { "revoked" } } @else {
                        form method="post" action={"/keys/" (k.id) "/revoke"} {
                            (csrf_field(v))
                            button type="submit" aria-label={"revoke " (k.name)} { "Revoke" }
                        }
                    }
                }
            } } }
        } }
        h2 { "New key" }
        form.stack method="post" action="/keys" {
            (csrf_field(v))
            label for="key-name" { "Name" }
            input #key-name name="name" required value=(flash.kept("name"));
            label for="key-kind" { "Kind" }
            select #key-kind name="kind" {
                @for k in ["api", "sdk", "ingest"] { option value=(k) selected[flash.kept("kind") == k] { (k) } }
            }
            label for="key-role" { "Role (api keys)" }
            select #key-role name="role" {
                @for r in ["viewer", "experimenter", "analyst", "admin"] { option value=(r) selected[flash.kept("role") == r] { (r) } }
            }
            label for="key-team" { "Team (required for experimenters)" }
            input #key-team name="team" value=(flash.kept("team"));
            div { button.primary type="submit" { "Create key" } }
        }
    };
    Ok(shell("API keys", Some(v), Nav::Platform("/keys"), body).into_response())
}

/// `POST /keys`: the token is shown on the answer itself, never again.
pub async fn create_key(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let kind = field(&f, "kind").to_owned();
    let req = KeyRequest {
        role: (kind == "api").then(|| field(&f, "role").to_owned()),
        kind,
        team: field(&f, "team").trim().to_owned(),
        name: field(&f, "name").trim().to_owned(),
    };
    match AdminService::new(state.app.clone())
        .create_key(&viewer.actor(), req)
        .await
    {
        Ok(k) => {
            keys_page(
                &state,
                &viewer,
                Flash::default(),
                Some((k.record.name, k.token)),
            )
            .await
        }
        Err(e) => {
            let (status, message) = refusal(e)?;
            let flash = Flash {
                ok: None,
                error: Some(message),
                kept: fields(&f),
            };
            let mut res = keys_page(&state, &viewer, flash, None).await?;
            *res.status_mut() = status;
            Ok(res)
        }
    }
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke_key(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let r = AdminService::new(state.app.clone())
        .revoke_key(&viewer.actor(), &id)
        .await;
    if r.is_ok() {
        // Its portal sessions end now, not at their next request.
        state.sessions.end_key(&id);
    }
    after(r, "/keys", &format!("key {id} revoked"), Vec::new(), |fl| {
        keys_page(&state, &viewer, fl, None)
    })
    .await
}

// ------------------------------------------------------------------ alerts

/// `GET /alerts`.
pub async fn alerts(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, PortalError> {
    alerts_page(&state, &viewer, d.flash()).await
}

async fn alerts_page(
    state: &PortalState,
    v: &Viewer,
    flash: Flash,
) -> Result<Response, PortalError> {
    let service = AlertService::new(state.app.clone());
    let hooks = service.list(&v.actor()).await?;
    let deliveries = service.deliveries(&v.actor(), 50).await?;
    let chosen: Vec<&str> = flash
        .kept
        .iter()
        .filter(|(k, _)| k == "events")
        .map(|(_, e)| e.as_str())
        .collect();
    let body = html! {
        h1 { "Alerts" }
        p.muted { "Webhooks the platform posts its alerts to (guardrail breaches, automatic kills and pauses, SRM, failed analyses, stale data), signed with their secret and retried with backoff." }
        (flash.show())
        h2 { "Webhooks" }
        @if hooks.is_empty() { p.muted { "none yet" } } @else {
            div.table-wrap { table #webhooks {
                thead { tr { th scope="col" { "URL" } th scope="col" { "Events" } th.hide-narrow scope="col" { "Registered" } th scope="col" { span.muted { "Delete" } } } }
                tbody { @for h in &hooks { tr {
                    td { code { (h.url) } }
                    td { (h.events.join(", ")) }
                    td.hide-narrow { (when(&h.created_at)) " by " (h.created_by) }
                    td { form method="post" action={"/alerts/" (h.id) "/delete"} {
                        (csrf_field(v))
                        button type="submit" aria-label={"delete " (h.url)} { "Delete" }
                    } }
                } } }
            } }
        }
        h3 { "New webhook" }
        form.stack method="post" action="/alerts" {
            (csrf_field(v))
            label for="hook-url" { "URL (https:// or http://)" }
            input #hook-url name="url" required value=(flash.kept("url"));
            label for="hook-secret" { "Secret (at least 16 characters; deliveries are signed with it)" }
            input #hook-secret name="secret" type="password" required autocomplete="off";
            fieldset.choices {
                legend { "Events" }
                @for e in EVENTS { label { input type="checkbox" name="events" value=(e) checked[chosen.contains(e)]; " " (e) } }
            }
            div { button.primary type="submit" { "Register" } }
        }
        h2 { "Recent deliveries" }
        @if deliveries.is_empty() { p.muted { "none yet" } } @else {
            div.table-wrap { table #deliveries {
                thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Experiment" } th scope="col" { "Status" } th.num scope="col" { "Attempts" } th scope="col" { "Last answer" } } }
                tbody { @for d in &deliveries { tr {
                    td { (when(&d.created_at)) }
                    td { (d.event) }
                    td { (d.experiment.as_deref().unwrap_or("–")) }
                    td { (d.status) }
                    td.num { (d.attempts) }
                    td { (d.last_status_code.map(|c| c.to_string()).or_else(|| d.last_error.clone()).unwrap_or_default()) }
                } } }
            } }
        }
    };
    Ok(shell("Alerts", Some(v), Nav::Platform("/alerts"), body).into_response())
}

/// `POST /alerts`.
pub async fn create_webhook(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    let req = WebhookRequest {
        url: field(&f, "url").trim().to_owned(),
        secret: field(&f, "secret").to_owned(),
        events: f
            .iter()
            .filter(|(k, _)| k == "events")
            .map(|(_, e)| e.clone())
            .collect(),
    };
    let r = AlertService::new(state.app.clone())
        .register(&viewer.actor(), req)
        .await;
    // The secret is never sent back to the page.
    let kept = fields(&f)
        .into_iter()
        .filter(|(k, _)| k != "secret")
        .collect();
    after(r, "/alerts", "webhook registered", kept, |fl| {
        alerts_page(&state, &viewer, fl)
    })
    .await
}

/// `POST /alerts/{id}/delete`.
pub async fn delete_webhook(
    State(state): State<PortalState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let r = AlertService::new(state.app.clone())
        .delete(&viewer.actor(), &id)
        .await;
    after(r, "/alerts", "webhook deleted", Vec::new(), |fl| {
        alerts_page(&state, &viewer, fl)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_examples_are_valid_definitions() {
        let m: MetricDef = serde_json::from_str(METRIC_EXAMPLE).unwrap();
        m.validate().unwrap();
        let g: GuardrailDef = serde_json::from_str(GUARDRAIL_EXAMPLE).unwrap();
        g.validate().unwrap();
    }
}
