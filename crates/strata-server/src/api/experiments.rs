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
use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::json::{ApiJson, ApiQuery};
use crate::model::{ExperimentRecord, ExperimentRequest, Status};
use crate::service::ExperimentService;
use crate::state::AppState;
use crate::store::{parse_rfc3339, AuditQuery};

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
    auth.require(&state, Perm::Read).await?;
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
    let after = bound("created_after", &q.created_after)?;
    let before = bound("created_before", &q.created_before)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(AppError::validation(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let text = q.q.as_ref().map(|t| t.to_lowercase());
    let all = state
        .store
        .experiments()
        .await
        .map_err(|e| state.store_error(e))?;
    let matching: Vec<&ExperimentRecord> = all
        .iter()
        .filter(|e| statuses.as_ref().is_none_or(|s| s.contains(&e.status)))
        .filter(|e| q.layer.as_ref().is_none_or(|l| e.layer.as_ref() == Some(l)))
        .filter(|e| q.owner_team.as_ref().is_none_or(|t| &e.owner_team == t))
        .filter(|e| {
            q.surface
                .as_ref()
                .is_none_or(|s| e.surfaces.is_empty() || e.surfaces.contains(s))
        })
        .filter(|e| {
            text.as_ref().is_none_or(|t| {
                [&e.key, &e.name, &e.hypothesis, &e.description]
                    .iter()
                    .any(|f| f.to_lowercase().contains(t.as_str()))
            })
        })
        .filter(|e| {
            let created = parse_rfc3339(&e.created_at).unwrap_or(0);
            after.is_none_or(|a| created >= a) && before.is_none_or(|b| created < b)
        })
        .collect();
    let total = matching.len();
    let items: Vec<&ExperimentRecord> = matching.into_iter().skip(offset).take(limit).collect();
    Ok(Json(
        json!({"items": items, "total": total, "limit": limit, "offset": offset}),
    ))
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
    auth.require(&state, Perm::Read).await?;
    let items = state
        .store
        .audit(&AuditQuery {
            entity_type: Some("experiment".into()),
            entity_key: Some(key),
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({ "items": items })))
}
