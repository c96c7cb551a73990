//! The new-experiment form: what and why, variants, metrics from the
//! registry, traffic (a layer picked on its utilisation bar, a range or a
//! size, surfaces, targeting) and the plan, with the power calculator.
//!
//! One page of numbered steps that works without JavaScript: the
//! calculator posts the form to itself and shows the plan (planned units
//! and days) beside what was typed; creating posts it to
//! `ExperimentService::create`, whose validation is the API's: a refusal is
//! shown at the field it names, with everything typed kept.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde_json::{json, Map, Value};
use strata_server::auth::Perm;
use strata_server::model::ExperimentRequest;
use strata_server::model::Status;
use strata_server::service::experiments::MAX_PAGE;
use strata_server::service::layers::LayerView;
use strata_server::service::power::{PowerMetric, PowerRequest};
use strata_server::service::registry::{Kind, RegistryService};
use strata_server::service::{
    permissions, ExperimentFilter, ExperimentService, LayerService, PowerService, ResultsService,
    ServiceError,
};
use strata_server::store::parse_rfc3339;
use strata_server::AppError;

use crate::page::{csrf_field, field, fields, notice, shell, Nav, PortalError};
use crate::session::Viewer;
use crate::PortalState;

/// Variant rows of the form.
const VARIANT_ROWS: usize = 4;

/// The form's free-text fields, sent to the API as they are (trimmed).
const TEXT_FIELDS: [&str; 6] = [
    "key",
    "name",
    "hypothesis",
    "description",
    "owner_team",
    "unit",
];

/// The form as typed: every field as text, repeated fields in order.
#[derive(Debug, Default, Clone)]
pub struct Draft(Vec<(String, String)>);

impl Draft {
    /// The first value of `name` (empty when absent).
    fn get(&self, name: &str) -> &str {
        field(&self.0, name)
    }

    /// Every value of `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A new experiment's defaults for `viewer`.
    fn defaults(viewer: &Viewer) -> Self {
        let d = [
            ("owner_team", viewer.principal.team.as_str()),
            ("unit", "user_id"),
            ("variant_key_1", "control"),
            ("variant_weight_1", "50"),
            ("variant_key_2", "treatment"),
            ("variant_weight_2", "50"),
            ("layer", "default"),
            ("size", "100"),
            ("mde", "0.02"),
            ("alpha", "0.05"),
            ("sequential", "group_sequential"),
            ("min_duration_days", "7"),
            ("power", "0.8"),
        ];
        Draft(
            d.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The API request this form describes; a field that cannot be read is
    /// an error at that field, in the API's terms.
    fn request(&self) -> Result<ExperimentRequest, (String, String)> {
        let mut o = Map::new();
        for f in TEXT_FIELDS {
            o.insert(f.into(), json!(self.get(f).trim()));
        }
        let opt_text = |name: &str| {
            let v = self.get(name).trim();
            (!v.is_empty()).then(|| v.to_owned())
        };
        if let Some(l) = opt_text("layer") {
            o.insert("layer".into(), json!(l));
        }
        if let Some(f) = opt_text("fallback_unit") {
            o.insert("fallback_unit".into(), json!(f));
        }
        for flag in ["sticky", "include_bots"] {
            o.insert(flag.into(), json!(self.get(flag) == "on"));
        }
        match (opt_text("range_start"), opt_text("range_end")) {
            (None, None) => {
                if let Some(s) = opt_text("size") {
                    o.insert("size".into(), number("size", &s)?);
                }
            }
            (Some(a), Some(b)) => {
                o.insert(
                    "range".into(),
                    json!([number("range", &a)?, number("range", &b)?]),
                );
            }
            _ => {
                return Err((
                    "range".into(),
                    "give both ends of the range, or neither and a size".into(),
                ))
            }
        }
        let surfaces: Vec<&str> = self
            .get("surfaces")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        o.insert("surfaces".into(), json!(surfaces));
        if let Some(t) = opt_text("targeting") {
            let v: Value = serde_json::from_str(&t).map_err(|e| {
                (
                    "targeting".to_owned(),
                    format!("targeting is not valid JSON: {e}"),
                )
            })?;
            o.insert("targeting".into(), v);
        }
        let mut variants = Vec::new();
        for i in 1..=VARIANT_ROWS {
            let key = self.get(&format!("variant_key_{i}")).trim();
            let weight = self.get(&format!("variant_weight_{i}")).trim();
            if key.is_empty() && weight.is_empty() {
                continue;
            }
            let field = format!("variants[{}].weight", variants.len());
            let w = weight.parse::<u32>().map_err(|_| {
                (
                    field,
                    format!("the weight of variant {key:?} must be a whole number, got {weight:?}"),
                )
            })?;
            let mut v = json!({"key": key, "weight": w});
            if i == 1 {
                v["control"] = json!(true);
            }
            variants.push(v);
        }
        o.insert("variants".into(), json!(variants));
        o.insert("primary_metric".into(), json!(self.get("primary_metric")));
        o.insert("secondary_metrics".into(), json!(self.all("secondary")));
        o.insert("guardrails".into(), json!(self.all("guardrails")));
        for f in ["mde", "alpha"] {
            o.insert(f.into(), number(f, self.get(f))?);
        }
        for f in ["planned_units", "min_duration_days"] {
            o.insert(f.into(), number(f, self.get(f))?);
        }
        o.insert("sequential".into(), json!(self.get("sequential")));
        o.insert(
            "requires_approval".into(),
            json!(self.get("requires_approval") == "on"),
        );
        let mut plan = Vec::new();
        for p in self
            .get("ramp_plan")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            // `percent:hours` — the stage's share and its least duration.
            let (percent, hours) = match p.split_once(':') {
                Some((a, h)) => (a, Some(h.trim().trim_end_matches('h'))),
                None => (p, None),
            };
            let mut stage =
                json!({"percent": number("ramp_plan", percent.trim().trim_end_matches('%'))?});
            if let Some(h) = hours {
                stage["min_hours"] = number("ramp_plan", h)?;
            }
            plan.push(stage);
        }
        o.insert("ramp_plan".into(), json!(plan));
        serde_json::from_value(Value::Object(o))
            .map_err(|e| (String::new(), format!("the form could not be read: {e}")))
    }
}

/// A number typed in field `field`, as JSON.
fn number(field: &str, text: &str) -> Result<Value, (String, String)> {
    let t = text.trim();
    if t.is_empty() {
        return Err((field.to_owned(), format!("{field} is required")));
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(json!(i));
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(|f| json!(f))
        .ok_or_else(|| {
            (
                field.to_owned(),
                format!("{field} must be a number, got {t:?}"),
            )
        })
}

/// What the page shows besides the form.
#[derive(Debug, Default)]
struct Outcome {
    /// The field refused (API path, e.g. `variants[1].weight`) and why.
    error: Option<(String, String)>,
    /// The power calculator's answer, and the units it plans in all.
    plan: Option<(String, u64)>,
}

/// `GET /experiments/new`.
pub async fn form(
    State(state): State<PortalState>,
    viewer: Viewer,
) -> Result<Response, PortalError> {
    require_write(&state, &viewer).await?;
    render(
        &state,
        &viewer,
        &Draft::defaults(&viewer),
        Outcome::default(),
        StatusCode::OK,
    )
    .await
}

/// Only roles that may create experiments see the form.
async fn require_write(state: &PortalState, viewer: &Viewer) -> Result<(), PortalError> {
    permissions::authorize(
        &state.app.store,
        &viewer.actor(),
        Perm::ExperimentsWrite,
        None,
    )
    .await?;
    Ok(())
}

/// `POST /experiments/new`: `intent=power` computes the plan, anything else
/// creates the draft.
pub async fn submit(
    State(state): State<PortalState>,
    viewer: Viewer,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PortalError> {
    require_write(&state, &viewer).await?;
    let draft = Draft(fields(&form));
    if draft.get("intent") == "power" {
        let outcome = match power(&state, &viewer, &draft).await {
            Ok(plan) => Outcome {
                error: None,
                plan: Some(plan),
            },
            Err(error) => Outcome {
                error: Some(error),
                plan: None,
            },
        };
        let status = if outcome.error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        return render(&state, &viewer, &draft, outcome, status).await;
    }
    let req = match draft.request() {
        Ok(r) => r,
        Err(error) => {
            let outcome = Outcome {
                error: Some(error),
                plan: None,
            };
            return render(&state, &viewer, &draft, outcome, StatusCode::BAD_REQUEST).await;
        }
    };
    match ExperimentService::new(state.app.clone())
        .create(&viewer.actor(), req)
        .await
    {
        Ok(e) => Ok(Redirect::to(&format!("/experiments/{}?done=create", e.key)).into_response()),
        Err(err @ ServiceError::Forbidden { .. }) => Err(err.into()),
        Err(err) => {
            let app = AppError::from(err);
            let outcome = Outcome {
                error: Some((app.field.clone().unwrap_or_default(), app.message.clone())),
                plan: None,
            };
            render(&state, &viewer, &draft, outcome, app.status).await
        }
    }
}

/// The power calculator over the form: units per variant and days.
async fn power(
    state: &PortalState,
    viewer: &Viewer,
    d: &Draft,
) -> Result<(String, u64), (String, String)> {
    let f = |name: &str| -> Result<Option<f64>, (String, String)> {
        let t = d.get(name).trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| {
                (
                    name.to_owned(),
                    format!("{name} must be a number, got {t:?}"),
                )
            })
    };
    let variants = (1..=VARIANT_ROWS)
        .filter(|i| !d.get(&format!("variant_key_{i}")).trim().is_empty())
        .count()
        .max(2) as u32;
    let size = f("size")?.unwrap_or(1000.0);
    let binomial = f("baseline_variance")?.is_none();
    // Traffic typed wins; else what the layer's running experiments saw.
    let (daily_traffic, observed) = match f("daily_traffic")? {
        Some(t) => (Some(t), None),
        None => {
            let layer = d.get("layer").trim();
            match observed_traffic(state, viewer, layer).await {
                Ok(Some((t, n))) => (Some(t), Some((layer.to_owned(), n))),
                Ok(None) => (None, None),
                Err(e) => {
                    let app = AppError::from(e);
                    return Err((app.field.unwrap_or_default(), app.message));
                }
            }
        }
    };
    let req = PowerRequest {
        metric: if binomial {
            PowerMetric::Binomial
        } else {
            PowerMetric::Continuous
        },
        baseline_rate: if binomial { f("baseline_rate")? } else { None },
        baseline_mean: if binomial { None } else { f("baseline_rate")? },
        baseline_variance: f("baseline_variance")?,
        mde: f("mde")?,
        units_per_variant: None,
        variants,
        alpha: f("alpha")?.unwrap_or(0.05),
        power: f("power")?.unwrap_or(0.8),
        daily_traffic,
        allocation: (size / 1000.0).clamp(0.0, 1.0),
    };
    let plan = PowerService::new(state.app.clone())
        .plan(&viewer.actor(), &req)
        .await
        .map_err(|e| {
            let app = AppError::from(e);
            (app.field.unwrap_or_default(), app.message)
        })?;
    let days = match (plan.days, &observed) {
        (Some(d), Some((layer, n))) => format!(
            ", about {d} days at this range's share of the {:.0} eligible units a day observed in layer {layer} (the median over the latest looks of {n} running experiment{})",
            daily_traffic.unwrap_or_default(),
            if *n == 1 { "" } else { "s" }
        ),
        (Some(d), None) => format!(", about {d} days at the daily traffic given and this range's share"),
        (None, _) => "; no running experiment of this layer has a look to observe its traffic: enter the daily traffic for a duration".to_owned(),
    };
    Ok((
        format!(
            "{} units per variant, {} in all{days} (α = {}, power {}).",
            plan.units_per_variant, plan.total_units, plan.alpha, plan.power
        ),
        plan.total_units,
    ))
}

/// Eligible units a day in `layer`, as its running experiments observed
/// them: for each with a look, the units of its latest look per day since
/// its start, over the share of the layer's traffic it admits (its range
/// times its ramp); the median over them, and how many there were. An
/// estimate: targeting and surfaces differ between experiments, and a ramp
/// raised during the look undercounts.
async fn observed_traffic(
    state: &PortalState,
    viewer: &Viewer,
    layer: &str,
) -> Result<Option<(f64, usize)>, ServiceError> {
    if layer.is_empty() {
        return Ok(None);
    }
    let actor = viewer.actor();
    let running = ExperimentService::new(state.app.clone())
        .list(
            &actor,
            &ExperimentFilter {
                statuses: Some(vec![Status::Running]),
                layer: Some(layer.to_owned()),
                limit: MAX_PAGE,
                ..ExperimentFilter::default()
            },
        )
        .await?;
    let looks = ResultsService::new(state.app.clone())
        .latest_summaries(&actor, &running.items)
        .await?;
    let mut rates: Vec<f64> = running
        .items
        .iter()
        .filter_map(|e| {
            let look = looks.get(&e.key)?;
            let start = parse_rfc3339(e.started_at.as_deref()?)?;
            let [a, b] = e.range?;
            daily_rate(
                look.summary.units,
                look.as_of - start,
                f64::from(b - a),
                e.ramp_percent,
            )
        })
        .collect();
    if rates.is_empty() {
        return Ok(None);
    }
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    let median = if n % 2 == 1 {
        rates[n / 2]
    } else {
        (rates[n / 2 - 1] + rates[n / 2]) / 2.0
    };
    Ok(Some((median, n)))
}

/// A layer's eligible units a day from one experiment's look: `units` in
/// `elapsed_ms` through `buckets` of the 1000 at `ramp_percent` (none for
/// less than an hour of data or no share).
fn daily_rate(units: u64, elapsed_ms: i64, buckets: f64, ramp_percent: f64) -> Option<f64> {
    let days = elapsed_ms as f64 / 86_400_000.0;
    let share = buckets / 1000.0 * ramp_percent / 100.0;
    (days >= 1.0 / 24.0 && share > 0.0).then(|| units as f64 / days / share)
}

/// The page.
async fn render(
    state: &PortalState,
    viewer: &Viewer,
    d: &Draft,
    outcome: Outcome,
    status: StatusCode,
) -> Result<Response, PortalError> {
    let actor = viewer.actor();
    let registry = RegistryService::new(state.app.clone());
    let metrics = keys(&registry.list(&actor, Kind::Metric).await?);
    let guardrails = keys(&registry.list(&actor, Kind::Guardrail).await?);
    let layers = LayerService::new(state.app.clone()).list(&actor).await?;
    // A computed plan fills the planned units in.
    let mut d = d.clone();
    if let Some((_, units)) = &outcome.plan {
        d.0.retain(|(k, _)| k != "planned_units");
        d.0.push(("planned_units".into(), units.to_string()));
    }
    let d = &d;
    let err = outcome.error.as_ref();
    // The error's field, without indexes: `variants[1].weight` → `variants`.
    let err_field = err.map(|(f, _)| f.split(['[', '.']).next().unwrap_or_default().to_owned());
    let at = |fields: &[&str]| -> Option<&str> {
        match (&err_field, err) {
            (Some(f), Some((_, m))) if fields.contains(&f.as_str()) => Some(m.as_str()),
            _ => None,
        }
    };
    let field_error = |fields: &[&str]| {
        html! {
            @if let Some(m) = at(fields) { span.field-error role="alert" { (m) } }
        }
    };
    let invalid = |fields: &[&str]| at(fields).map(|_| "true");
    let secondary: BTreeSet<&str> = d.all("secondary").into_iter().collect();
    let chosen_guardrails: BTreeSet<&str> = d.all("guardrails").into_iter().collect();
    let known: Vec<&str> = TEXT_FIELDS
        .into_iter()
        .chain([
            "variants",
            "primary_metric",
            "secondary_metrics",
            "guardrails",
            "layer",
            "range",
            "size",
            "surfaces",
            "targeting",
            "mde",
            "alpha",
            "planned_units",
            "sequential",
            "min_duration_days",
            "ramp_plan",
            "baseline_rate",
            "baseline_variance",
            "daily_traffic",
            "power",
        ])
        .collect();
    let body = html! {
        p.muted { a href="/experiments" { "Experiments" } " / new" }
        h1 { "New experiment" }
        @if let Some((f, m)) = err {
            @if !known.contains(&err_field.as_deref().unwrap_or_default()) || f.is_empty() {
                (notice("error", m))
            } @else {
                (notice("error", &format!("{}: {m}", f)))
            }
        }
        form.stack.wizard method="post" action="/experiments/new" novalidate {
            (csrf_field(viewer))
            fieldset {
                legend { "1. What and why" }
                label for="key" { "Key (letters, digits, _ . -)" }
                input #key name="key" value=(d.get("key")) required aria-invalid=[invalid(&["key"])];
                (field_error(&["key"]))
                label for="name" { "Name" }
                input #name name="name" value=(d.get("name")) required aria-invalid=[invalid(&["name"])];
                (field_error(&["name"]))
                label for="hypothesis" { "Hypothesis (pre-registered: frozen once submitted)" }
                textarea #hypothesis name="hypothesis" rows="2" aria-invalid=[invalid(&["hypothesis"])] { (d.get("hypothesis")) }
                (field_error(&["hypothesis"]))
                label for="description" { "Description" }
                textarea #description name="description" rows="2" { (d.get("description")) }
                label for="owner_team" { "Team" }
                input #owner_team name="owner_team" value=(d.get("owner_team")) aria-invalid=[invalid(&["owner_team"])];
                (field_error(&["owner_team"]))
                label for="unit" { "Unit (the context attribute that identifies it)" }
                input #unit name="unit" value=(d.get("unit"));
                (field_error(&["unit"]))
                label for="fallback_unit" { "Fallback unit (used when the context has no unit id, e.g. device_id before sign-in; empty: none)" }
                input #fallback_unit name="fallback_unit" value=(d.get("fallback_unit")) aria-invalid=[invalid(&["fallback_unit"])];
                (field_error(&["fallback_unit"]))
                label { span { input type="checkbox" name="sticky" checked[d.get("sticky") == "on"]; " Sticky: a user keeps their variant when targeting, ramp or weights change and after signing in (checkout, pricing)" } }
                label { span { input type="checkbox" name="include_bots" checked[d.get("include_bots") == "on"]; " Include known bots (by user agent; off: bots get the default and log no exposure)" } }
            }
            fieldset #variants {
                legend { "2. Variants (the first is the control)" }
                @for i in 1..=VARIANT_ROWS {
                    div.actions {
                        label { "Variant " (i)
                            input name={"variant_key_" (i)} value=(d.get(&format!("variant_key_{i}"))) size="14"; }
                        label { "Weight"
                            input name={"variant_weight_" (i)} value=(d.get(&format!("variant_weight_{i}"))) size="4" inputmode="numeric"; }
                    }
                }
                (field_error(&["variants"]))
            }
            fieldset {
                legend { "3. Metrics" }
                @if metrics.is_empty() {
                    (notice("warn", "the metric registry is empty: an analyst or admin adds metrics first (POST /api/v1/metrics)"))
                }
                label for="primary_metric" { "Primary metric (decides the experiment)" }
                select #primary_metric name="primary_metric" aria-invalid=[invalid(&["primary_metric"])] {
                    option value="" { "choose…" }
                    @for m in &metrics { option value=(m) selected[d.get("primary_metric") == m] { (m) } }
                }
                (field_error(&["primary_metric"]))
                fieldset.choices {
                    legend { "Secondary metrics" }
                    @for m in &metrics {
                        label { input type="checkbox" name="secondary" value=(m) checked[secondary.contains(m.as_str())]; " " (m) }
                    }
                }
                (field_error(&["secondary_metrics"]))
                @if !guardrails.is_empty() {
                    fieldset.choices {
                        legend { "Guardrails (organisation-wide ones apply too)" }
                        @for g in &guardrails {
                            label { input type="checkbox" name="guardrails" value=(g) checked[chosen_guardrails.contains(g.as_str())]; " " (g) }
                        }
                    }
                }
                (field_error(&["guardrails"]))
            }
            fieldset {
                legend { "4. Traffic" }
                label for="layer" { "Layer" }
                select #layer name="layer" aria-invalid=[invalid(&["layer"])] {
                    @for l in &layers { option value=(l.layer.key) selected[d.get("layer") == l.layer.key] { (l.layer.key) " (" (l.free_buckets) " of 1000 buckets free)" } }
                }
                (field_error(&["layer"]))
                div #utilisation {
                    @for l in &layers { (utilisation(l)) }
                }
                div.actions {
                    label { "Size (buckets)" input name="size" value=(d.get("size")) size="5" inputmode="numeric" aria-invalid=[invalid(&["size"])]; }
                    span.muted { "or a range" }
                    label { "From" input name="range_start" value=(d.get("range_start")) size="5" inputmode="numeric" aria-invalid=[invalid(&["range"])]; }
                    label { "to (excluded)" input name="range_end" value=(d.get("range_end")) size="5" inputmode="numeric"; }
                }
                (field_error(&["size", "range"]))
                label for="surfaces" { "Surfaces (comma-separated; empty: everywhere)" }
                input #surfaces name="surfaces" value=(d.get("surfaces"));
                label for="targeting" { "Targeting (JSON rule tree; empty: everyone)" }
                textarea #targeting name="targeting" rows="3" placeholder=r#"{"all": [{"attr": "country", "op": "in", "values": ["US"]}]}"# aria-invalid=[invalid(&["targeting"])] { (d.get("targeting")) }
                (field_error(&["targeting"]))
            }
            fieldset {
                legend { "5. Plan" }
                div.actions {
                    label { "MDE (relative, 0.02 = 2 %)" input #mde name="mde" value=(d.get("mde")) size="6" aria-invalid=[invalid(&["mde"])]; }
                    label { "Alpha" input name="alpha" value=(d.get("alpha")) size="5" aria-invalid=[invalid(&["alpha"])]; }
                    label { "Power" input name="power" value=(d.get("power")) size="5"; }
                }
                (field_error(&["mde", "alpha", "power"]))
                div.actions #power {
                    label { "Baseline rate (or mean)" input name="baseline_rate" value=(d.get("baseline_rate")) size="7" aria-invalid=[invalid(&["baseline_rate", "baseline_mean"])]; }
                    label { "Variance (continuous metrics)" input name="baseline_variance" value=(d.get("baseline_variance")) size="7"; }
                    label { "Daily traffic (eligible units)" input name="daily_traffic" value=(d.get("daily_traffic")) size="8" aria-invalid=[invalid(&["daily_traffic"])]; }
                    button type="submit" name="intent" value="power" { "Calculate" }
                }
                (field_error(&["baseline_rate", "baseline_mean", "baseline_variance", "daily_traffic"]))
                @if let Some((p, _)) = &outcome.plan { p.notice.notice-ok #plan role="status" { (p) } }
                label for="planned_units" { "Planned units (all variants)" }
                input #planned_units name="planned_units" value=(d.get("planned_units")) inputmode="numeric" aria-invalid=[invalid(&["planned_units"])];
                (field_error(&["planned_units"]))
                label for="sequential" { "Sequential testing" }
                select #sequential name="sequential" {
                    @for (v, label) in [("none", "none: one look at the planned units"), ("group_sequential", "group-sequential looks (O'Brien–Fleming)"), ("always_valid", "always valid (look any time)")] {
                        option value=(v) selected[d.get("sequential") == v] { (label) }
                    }
                }
                label for="min_duration_days" { "Minimum duration (days)" }
                input #min_duration_days name="min_duration_days" value=(d.get("min_duration_days")) inputmode="numeric" aria-invalid=[invalid(&["min_duration_days"])];
                (field_error(&["min_duration_days"]))
                label for="ramp_plan" { "Ramp plan (percent:hours at least at it, e.g. 5:24, 50:48, 100; empty: ramped by hand)" }
                input #ramp_plan name="ramp_plan" value=(d.get("ramp_plan")) aria-invalid=[invalid(&["ramp_plan"])];
                (field_error(&["ramp_plan"]))
                label { span { input type="checkbox" name="requires_approval" checked[d.get("requires_approval") == "on"]; " Requires approval before it starts" } }
            }
            div.actions { button.primary type="submit" name="intent" value="create" { "Create draft" } a href="/experiments" { "Cancel" } }
        }
    };
    Ok((
        status,
        shell("New experiment", Some(viewer), Nav::Experiments, body),
    )
        .into_response())
}

/// The keys of stored definitions.
fn keys(defs: &[Value]) -> Vec<String> {
    defs.iter()
        .filter_map(|d| d.get("key").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// A layer's 1000 buckets as a bar: held ranges filled, free ones empty,
/// with the free ranges in words (an SVG, as the page's policy allows no
/// inline style).
pub fn utilisation(l: &LayerView) -> Markup {
    let free: Vec<String> = l.free.iter().map(|[a, b]| format!("[{a}, {b})")).collect();
    let label = format!(
        "layer {}: {:.0} % held; free {}",
        l.layer.key,
        l.utilisation * 100.0,
        if free.is_empty() {
            "none".to_owned()
        } else {
            free.join(", ")
        }
    );
    html! {
        div.utilisation {
            span.muted { (l.layer.key) }
            svg.bar viewBox="0 0 1000 14" preserveAspectRatio="none" width="100%" height="14" role="img" aria-label=(label) {
                title { (label) }
                rect.free x="0" y="0" width="1000" height="14" {}
                @for a in &l.allocated {
                    rect.held x=(a.range[0]) y="0" width=(a.range[1].saturating_sub(a.range[0])) height="14" { title { (a.experiment) " [" (a.range[0]) ", " (a.range[1]) ")" } }
                }
            }
            span.muted { "free: " @if free.is_empty() { "none" } @else { (free.join(", ")) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(pairs: &[(&str, &str)]) -> Draft {
        Draft(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_form_reads_as_the_api_request() {
        let d = draft(&[
            ("key", "k"),
            ("name", "N"),
            ("owner_team", "t"),
            ("unit", "user_id"),
            ("variant_key_1", "control"),
            ("variant_weight_1", "50"),
            ("variant_key_2", "b"),
            ("variant_weight_2", "50"),
            ("layer", "default"),
            ("size", "100"),
            ("surfaces", "web, app"),
            ("primary_metric", "conversion"),
            ("secondary", "revenue"),
            ("secondary", "aov"),
            ("mde", "0.02"),
            ("alpha", "0.05"),
            ("planned_units", "1000"),
            ("min_duration_days", "7"),
            ("sequential", "none"),
            ("ramp_plan", "5:24, 50%:48h, 100"),
            ("fallback_unit", " device_id "),
            ("sticky", "on"),
        ]);
        let r = d.request().unwrap();
        assert_eq!(r.fallback_unit.as_deref(), Some("device_id"));
        assert!(r.sticky && !r.include_bots);
        assert_eq!(r.variants.len(), 2);
        assert_eq!(r.variants[0].control, Some(true));
        assert_eq!(r.secondary_metrics, vec!["revenue", "aov"]);
        assert_eq!(r.surfaces, vec!["web", "app"]);
        assert_eq!(r.size, Some(100));
        assert_eq!(r.ramp_plan.len(), 3);
        assert_eq!(
            (
                r.ramp_plan[1].percent,
                r.ramp_plan[1].min_hours,
                r.ramp_plan[2].min_hours
            ),
            (50.0, Some(48.0), None)
        );
        assert_eq!(r.planned_units, 1000);
    }

    #[test]
    fn observed_traffic_is_per_day_over_the_share_admitted() {
        // 6,000 units in 2 days through 100 buckets at 50 %: 3,000 a day
        // through 5 % of the layer, so 60,000 a day in it.
        assert_eq!(
            daily_rate(6000, 2 * 86_400_000, 100.0, 50.0),
            Some(60_000.0)
        );
        assert_eq!(daily_rate(10, 60_000, 100.0, 50.0), None, "under an hour");
        assert_eq!(daily_rate(10, 86_400_000, 100.0, 0.0), None, "no share");
    }

    #[test]
    fn unreadable_fields_are_named() {
        let d = draft(&[("variant_key_1", "a"), ("variant_weight_1", "half")]);
        assert_eq!(d.request().unwrap_err().0, "variants[0].weight");
        let d = draft(&[("range_start", "10")]);
        assert_eq!(d.request().unwrap_err().0, "range");
        let d = draft(&[("targeting", "{")]);
        assert_eq!(d.request().unwrap_err().0, "targeting");
    }
}
