//! "Which experiments is this user in?": a unit's attributes in, every
//! experiment's outcome out with the reason, for support and debugging.
//!
//! The answer is `ExperimentService::explain`: strata-core's explain mode
//! over the config the SDKs are served, the same evaluation they run. A
//! lookup changes nothing, so it is a `GET` form whose URL can be shared.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use strata_server::service::ExperimentService;

use crate::page::{notice, shell, Nav, PortalError};
use crate::session::Viewer;
use crate::PortalState;

/// What the form starts with.
const EXAMPLE: &str = r#"{"user_id": "u-42", "country": "US"}"#;

/// Query of `GET /lookup`.
#[derive(Debug, Default, Deserialize)]
pub struct LookupQuery {
    /// The context as a JSON object.
    context: Option<String>,
    /// The surface of the request.
    #[serde(default)]
    surface: String,
}

/// `GET /lookup`: the form and, when a context was sent, every
/// experiment's outcome for it.
pub async fn show(
    State(state): State<PortalState>,
    viewer: Viewer,
    Query(q): Query<LookupQuery>,
) -> Result<Response, PortalError> {
    let text = q.context.clone().unwrap_or_else(|| EXAMPLE.to_owned());
    let surface = q.surface.trim();
    // The context must be a JSON object; say where it is wrong.
    let parsed = q.context.as_ref().map(|c| {
        serde_json::from_str::<serde_json::Value>(c)
            .map_err(|e| format!("context is not valid JSON: {e}"))
            .and_then(|v| strata_core::Context::try_from(v).map_err(|e| format!("context: {e}")))
    });
    let (status, error, found) = match parsed {
        None => (StatusCode::OK, None, None),
        Some(Err(e)) => (StatusCode::BAD_REQUEST, Some(e), None),
        Some(Ok(ctx)) => {
            let found = ExperimentService::new(state.app.clone())
                .explain(
                    &viewer.actor(),
                    &ctx,
                    (!surface.is_empty()).then_some(surface),
                )
                .await?;
            (StatusCode::OK, None, Some(found))
        }
    };
    let body = html! {
        h1 { "Which experiments is this user in?" }
        p.muted { "Evaluates the config the SDKs are served for a unit's attributes, exactly as an SDK would, and says why each experiment does or does not assign it." }
        form.stack method="get" action="/lookup" {
            label for="context" { "Attributes (JSON object: the unit id under its attribute, e.g. user_id, and anything targeting reads)" }
            textarea #context name="context" rows="4" required
                aria-invalid=[error.as_ref().map(|_| "true")] { (text) }
            @if let Some(e) = &error { span.field-error role="alert" { (e) } }
            label for="surface" { "Surface (empty: every surface)" }
            input #surface type="text" name="surface" value=(surface);
            div { button.primary type="submit" { "Look up" } }
        }
        @if let Some(found) = &found {
            @let assigned = found.experiments.iter().filter(|x| x.outcome == "assigned").count();
            h2 { "In " (assigned) " of " (found.experiments.len()) " experiments" }
            p.muted { "Config version " (found.version) "." }
            @if found.experiments.is_empty() {
                (notice("info", "the served config has no experiment"))
            } @else {
                div.table-wrap { table #lookup {
                    thead { tr { th scope="col" { "Experiment" } th scope="col" { "Layer" } th scope="col" { "Outcome" } th scope="col" { "Why" } } }
                    tbody {
                        @for x in &found.experiments {
                            tr {
                                td { a href={"/experiments/" (x.experiment)} { (x.experiment) } }
                                td { (x.layer.as_deref().unwrap_or("–")) }
                                td {
                                    @if let Some(v) = &x.variant {
                                        span.badge.health-ok { (v) }
                                    } @else {
                                        span.badge { (x.outcome.replace('_', " ")) }
                                    }
                                }
                                td { (x.message) }
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok((
        status,
        shell("User lookup", Some(&viewer), Nav::Lookup, body),
    )
        .into_response())
}
