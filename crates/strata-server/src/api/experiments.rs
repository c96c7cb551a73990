//! Experiments over HTTP: create, read, list, update while draft, and one
//! experiment's audit trail; the lifecycle actions are in
//! [`super::lifecycle`]. The handlers parse, call
//! [`crate::service::ExperimentService`] and render.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub use super::lifecycle::action;
use crate::activation::Activation;
use crate::auth::Auth;
use crate::error::AppError;
use crate::json::{ApiJson, ApiQuery};
use crate::model::{ExperimentRecord, ExperimentRequest, Status};
use crate::service::{ExperimentFilter, ExperimentService};
use crate::state::AppState;
use crate::store::parse_rfc3339;

/// `POST /api/v1/experiments`
#[utoipa::path(post, path = "/api/v1/experiments", tag = "experiments",
    request_body = ExperimentRequest,
    responses((status = 201, body = ExperimentRecord), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<ExperimentRequest>,
) -> Result<impl IntoResponse, AppError> {
    let rec = ExperimentService::new(state)
        .create(&auth.actor(), req)
        .await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// `GET /api/v1/experiments/{key}`
#[utoipa::path(get, path = "/api/v1/experiments/{key}", tag = "experiments",
    params(("key" = String, Path)), responses((status = 200, body = ExperimentRecord), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<ExperimentRecord>, AppError> {
    let e = ExperimentService::new(state)
        .get(&auth.actor(), &key)
        .await?;
    Ok(Json(e))
}

/// `GET /api/v1/experiments/{key}/activation`: whether the SDKs have applied
/// the experiment's current config (`docs/api.md`, *Activation*).
#[utoipa::path(get, path = "/api/v1/experiments/{key}/activation", tag = "experiments",
    params(("key" = String, Path)), responses((status = 200, body = Activation), (status = 404)))]
pub async fn activation(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Activation>, AppError> {
    let e = ExperimentService::new(state.clone())
        .get(&auth.actor(), &key)
        .await?;
    Ok(Json(Activation::of(
        &e,
        &state.instances,
        state.settings.activation_timeout,
    )))
}

/// Filters of `GET /api/v1/experiments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Layer key.
    pub layer: Option<String>,
    /// Owning team.
    pub owner_team: Option<String>,
    /// Surface.
    pub surface: Option<String>,
    /// Case-insensitive text in key, name, hypothesis or description.
    pub q: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// Items to skip.
    pub offset: Option<usize>,
}

/// `GET /api/v1/experiments`
#[utoipa::path(get, path = "/api/v1/experiments", tag = "experiments", params(ListQuery),
    responses((status = 200, description = "{items, total, limit, offset}")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, AppError> {
    let statuses = match &q.status {
        Some(s) => Some(
            s.split(',')
                .map(|p| {
                    Status::parse(p.trim()).ok_or_else(|| {
                        AppError::validation("status", format!("unknown status {p:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let bound = |field: &str, v: &Option<String>| -> Result<Option<i64>, AppError> {
        v.as_deref()
            .map(|s| {
                parse_rfc3339(s).ok_or_else(|| {
                    AppError::validation(field, format!("{field} must be an rfc 3339 timestamp"))
                })
            })
            .transpose()
    };
    let filter = ExperimentFilter {
        statuses,
        layer: q.layer,
        owner_team: q.owner_team,
        surface: q.surface,
        text: q.q,
        created_after: bound("created_after", &q.created_after)?,
        created_before: bound("created_before", &q.created_before)?,
        limit: q.limit.unwrap_or(50),
        offset: q.offset.unwrap_or(0),
    };
    let page = ExperimentService::new(state)
        .list(&auth.actor(), &filter)
        .await?;
    Ok(Json(json!({
        "items": page.items,
        "total": page.total,
        "limit": filter.limit,
        "offset": filter.offset,
    })))
}

/// `PUT /api/v1/experiments/{key}`: replace the definition while `draft`.
#[utoipa::path(put, path = "/api/v1/experiments/{key}", tag = "experiments",
    params(("key" = String, Path)), request_body = ExperimentRequest,
    responses((status = 200, body = ExperimentRecord), (status = 409, description = "stale revision or not a draft")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<ExperimentRequest>,
) -> Result<Json<ExperimentRecord>, AppError> {
    let rec = ExperimentService::new(state)
        .update(&auth.actor(), &key, req)
        .await?;
    Ok(Json(rec))
}

/// `GET /api/v1/experiments/{key}/audit`
#[utoipa::path(get, path = "/api/v1/experiments/{key}/audit", tag = "audit", operation_id = "experiment_audit",
    params(("key" = String, Path)), responses((status = 200, description = "{items: [AuditEntry]}")))]
pub async fn audit(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    let items = ExperimentService::new(state)
        .audit(&auth.actor(), &key, 1000)
        .await?;
    Ok(Json(json!({ "items": items })))
}

/// Body of `POST /api/v1/explain`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The unit's attributes, as an SDK would pass them (`{"user_id": "u-42", "country": "US"}`).
    #[schema(value_type = Object)]
    pub context: Value,
    /// The surface of the request (none: every surface).
    pub surface: Option<String>,
}

/// `POST /api/v1/explain`: which experiments assign this unit, and why
/// every other one does not ("which experiments is this user in?").
#[utoipa::path(post, path = "/api/v1/explain", tag = "experiments", request_body = ExplainRequest,
    responses((status = 200, body = crate::service::Lookup), (status = 400)))]
pub async fn explain(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> Result<Json<crate::service::Lookup>, AppError> {
    let ctx = strata_core::Context::try_from(req.context)
        .map_err(|e| AppError::validation("context", format!("context: {e}")))?;
    let found = ExperimentService::new(state)
        .explain(&auth.actor(), &ctx, req.surface.as_deref())
        .await?;
    Ok(Json(found))
}
