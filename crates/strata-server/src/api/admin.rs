//! API keys, the audit log, config versions and rollback over HTTP: the
//! handlers parse, call [`AdminService`] and render.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::json::{ApiJson, ApiQuery};
use crate::service::admin::AdminService;
use crate::service::ServiceError;
use crate::state::AppState;

pub use crate::service::admin::{AuditParams, KeyRequest};

/// `POST /api/v1/keys` (admin): the token is in the response, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = KeyRequest,
    responses((status = 201, description = "{token, id, kind, role, team, name}")))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<KeyRequest>,
) -> Result<impl IntoResponse, AppError> {
    let created = AdminService::new(state)
        .create_key(&auth.actor(), req)
        .await?;
    let rec = created.record;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": created.token,
            "id": rec.id,
            "kind": rec.kind,
            "role": rec.role,
            "team": rec.team,
            "name": rec.name,
        })),
    ))
}

/// `GET /api/v1/keys` (admin): never returns tokens.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", responses((status = 200, description = "{items: [KeyRecord]}")))]
pub async fn list_keys(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, AppError> {
    let items = AdminService::new(state).keys(&auth.actor()).await?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /api/v1/keys/{id}` (admin): revokes a key.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    AdminService::new(state)
        .revoke_key(&auth.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/audit` (analyst, admin)
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "{items: [AuditEntry]}, newest first")))]
pub async fn audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<Value>, AppError> {
    let items = AdminService::new(state).audit(&auth.actor(), p).await?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/config`: the version served by this instance.
#[utoipa::path(get, path = "/api/v1/config", tag = "config", responses((status = 200, description = "{version, servable_experiments, disabled_flags}")))]
pub async fn config_info(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::Read).await?;
    let live = state.live.load();
    Ok(Json(json!({
        "version": live.version,
        "servable_experiments": live.compiled.servable_experiments(),
        "disabled_flags": live.extra.disabled.len(),
    })))
}

/// `GET /api/v1/config/versions/{version}`: a stored snapshot.
#[utoipa::path(get, path = "/api/v1/config/versions/{version}", tag = "config", params(("version" = u64, Path)),
    responses((status = 200, description = "{version, created_at, actor, reason, snapshot}"), (status = 404)))]
pub async fn config_version(
    State(state): State<AppState>,
    auth: Auth,
    Path(version): Path<u64>,
) -> Result<Json<Value>, AppError> {
    let s = AdminService::new(state)
        .config_version(&auth.actor(), version)
        .await?;
    let snapshot: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
    Ok(Json(json!({
        "version": s.version,
        "created_at": s.created_at,
        "actor": s.actor,
        "reason": s.reason,
        "snapshot": snapshot,
    })))
}

/// The body of `POST /api/v1/config/rollback`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose content to republish.
    pub to_version: u64,
}

/// `POST /api/v1/config/rollback` (admin): republishes an earlier snapshot's
/// content as a new version. Definitions are not changed.
#[utoipa::path(post, path = "/api/v1/config/rollback", tag = "config", request_body = RollbackRequest,
    responses((status = 200, description = "{version, rolled_back_to}"), (status = 404)))]
pub async fn rollback(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<Value>, AppError> {
    let r = AdminService::new(state)
        .rollback(&auth.actor(), req.to_version)
        .await
        .map_err(|e| match e {
            ServiceError::NotFound { .. } => AppError::from(e).with_field("to_version"),
            e => AppError::from(e),
        })?;
    Ok(Json(
        json!({"version": r.version, "rolled_back_to": r.rolled_back_to}),
    ))
}
