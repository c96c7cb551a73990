//! The guardrail monitor's record over HTTP: state and history, review of a
//! breach awaiting approval, replay. The handlers parse, call
//! [`GuardrailService`] and render.

use axum::extract::{Path, State};
use axum::Json;

use crate::auth::Auth;
use crate::error::AppError;
use crate::service::guardrails::{GuardrailService, GuardrailsView, Replay, Review};
use crate::state::AppState;

/// `GET /api/v1/experiments/{key}/guardrails`: the latest evaluation of
/// each guardrail, any breach awaiting approval, and the history.
#[utoipa::path(get, path = "/api/v1/experiments/{key}/guardrails", tag = "guardrails",
    params(("key" = String, Path)),
    responses((status = 200, body = GuardrailsView), (status = 403), (status = 404)))]
pub async fn view(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<GuardrailsView>, AppError> {
    Ok(Json(
        GuardrailService::new(state)
            .view(&auth.actor(), &key)
            .await?,
    ))
}

/// `POST /api/v1/experiments/{key}/guardrails/{guardrail}/confirm`: applies
/// the guardrail's action to an experiment whose breach awaits approval
/// (the owning team's experimenters, admins); audited.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/guardrails/{guardrail}/confirm", tag = "guardrails",
    params(("key" = String, Path), ("guardrail" = String, Path)),
    responses((status = 200, body = Review), (status = 403), (status = 404),
        (status = 409, description = "no breach awaits approval")))]
pub async fn confirm(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, guardrail)): Path<(String, String)>,
) -> Result<Json<Review>, AppError> {
    Ok(Json(
        GuardrailService::new(state)
            .confirm(&auth.actor(), &key, &guardrail)
            .await?,
    ))
}

/// `POST /api/v1/experiments/{key}/guardrails/{guardrail}/dismiss`: keeps
/// the experiment running despite the breach; audited.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/guardrails/{guardrail}/dismiss", tag = "guardrails",
    params(("key" = String, Path), ("guardrail" = String, Path)),
    responses((status = 200, body = Review), (status = 403), (status = 404),
        (status = 409, description = "no breach awaits approval")))]
pub async fn dismiss(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, guardrail)): Path<(String, String)>,
) -> Result<Json<Review>, AppError> {
    Ok(Json(
        GuardrailService::new(state)
            .dismiss(&auth.actor(), &key, &guardrail)
            .await?,
    ))
}

/// `POST /api/v1/experiments/{key}/guardrails/evaluations/{id}/replay`:
/// evaluates a recorded evaluation's stored input again.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/guardrails/evaluations/{id}/replay", tag = "guardrails",
    params(("key" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Replay), (status = 403), (status = 404)))]
pub async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, id)): Path<(String, String)>,
) -> Result<Json<Replay>, AppError> {
    Ok(Json(
        GuardrailService::new(state)
            .replay(&auth.actor(), &key, &id)
            .await?,
    ))
}
