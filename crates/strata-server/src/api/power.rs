//! The power calculator over HTTP: the handler parses, calls
//! [`PowerService`] and renders.

use axum::extract::State;
use axum::Json;

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::ApiJson;
use crate::service::power::{PowerPlan, PowerRequest, PowerService};
use crate::state::AppState;

/// `POST /api/v1/power`: units per variant for an MDE, the MDE for a number
/// of units, and the days to enrol them at a daily traffic.
#[utoipa::path(post, path = "/api/v1/power", tag = "power", request_body = PowerRequest,
    responses((status = 200, body = PowerPlan), (status = 400)))]
pub async fn plan(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<PowerRequest>,
) -> Result<Json<PowerPlan>, AppError> {
    let plan = PowerService::new(state).plan(&auth.actor(), &req).await?;
    Ok(Json(plan))
}
