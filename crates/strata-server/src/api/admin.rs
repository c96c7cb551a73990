//! API keys, the audit log, config versions and rollback.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{hash_token, new_key_record, new_token, Auth, KeyKind, Perm, Role};
use crate::error::AppError;
use crate::json::{ApiJson, ApiQuery};
use crate::live::SnapshotExtra;
use crate::model::check_text;
use crate::state::{invalid_snapshot, AppState};
use crate::store::AuditQuery;

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// `api`, `sdk` or `ingest`.
    pub kind: String,
    /// For `api` keys: `admin`, `experimenter`, `analyst` or `viewer`.
    #[serde(default)]
    pub role: Option<String>,
    /// Team (required for experimenters).
    #[serde(default)]
    pub team: String,
    /// Display name.
    pub name: String,
}

/// `POST /api/v1/keys` (admin): the token is in the response, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = KeyRequest,
    responses((status = 201, description = "{token, id, kind, role, team, name}")))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<KeyRequest>,
) -> Result<impl IntoResponse, AppError> {
    auth.require(&state, Perm::KeysWrite).await?;
    let kind = KeyKind::parse(&req.kind).ok_or_else(|| {
        AppError::validation(
            "kind",
            format!(
                "unknown key kind {:?}; expected api, sdk or ingest",
                req.kind
            ),
        )
    })?;
    let role = match (kind, req.role.as_deref()) {
        (KeyKind::Api, Some(r)) => Role::parse(r).ok_or_else(|| {
            AppError::validation(
                "role",
                format!("unknown role {r:?}; expected admin, experimenter, analyst or viewer"),
            )
        })?,
        (KeyKind::Api, None) => {
            return Err(AppError::validation(
                "role",
                "role is required for api keys",
            ))
        }
        (_, None) => Role::Viewer,
        (_, Some(r)) => Role::parse(r)
            .ok_or_else(|| AppError::validation("role", format!("unknown role {r:?}")))?,
    };
    if req.name.trim().is_empty() {
        return Err(AppError::validation("name", "name must not be empty"));
    }
    check_text("name", &req.name, 128)?;
    check_text("team", &req.team, 128)?;
    if kind == KeyKind::Api && role == Role::Experimenter && req.team.is_empty() {
        return Err(AppError::validation(
            "team",
            "an experimenter key needs a team",
        ));
    }
    let token = new_token()?;
    let rec = new_key_record(kind, role, &req.team, &req.name, &auth.name)?;
    state
        .store
        .insert_key(&rec, &hash_token(&token), &auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
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
    auth.require(&state, Perm::KeysWrite).await?;
    let items = state.store.keys().await.map_err(|e| state.store_error(e))?;
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
    auth.require(&state, Perm::KeysWrite).await?;
    let found = state
        .store
        .revoke_key(&id, &auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    state.keys.remove_key(&id);
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("key", &id))
    }
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// `experiment:KEY`, `layer:KEY`, … or just a key.
    pub entity: Option<String>,
    /// Entity type (`experiment`, `layer`, `metric`, `guardrail`, `holdout`, `config`, `key`, `request`).
    pub entity_type: Option<String>,
    /// Action, e.g. `experiment.kill`, `denied`.
    pub action: Option<String>,
    /// Entries older than this sequence number (paging).
    pub before: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// `GET /api/v1/audit` (analyst, admin)
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "{items: [AuditEntry]}, newest first")))]
pub async fn audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::AuditRead).await?;
    let (mut entity_type, entity_key) = match p.entity.as_deref() {
        Some(e) => match e.split_once(':') {
            Some((t, k)) => (Some(t.to_owned()), Some(k.to_owned())),
            None => (None, Some(e.to_owned())),
        },
        None => (None, None),
    };
    if p.entity_type.is_some() {
        entity_type = p.entity_type.clone();
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::validation(
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let items = state
        .store
        .audit(&AuditQuery {
            entity_type,
            entity_key,
            action: p.action,
            before_seq: p.before,
            limit,
        })
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/config`: the version served by this instance.
#[utoipa::path(get, path = "/api/v1/config", tag = "config", responses((status = 200, description = "{version, experiments, servable}")))]
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
    auth.require(&state, Perm::Read).await?;
    let s = state
        .store
        .snapshot(version)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| AppError::not_found("config version", &version.to_string()))?;
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
    auth.require(&state, Perm::ConfigRollback).await?;
    let mut tx = state
        .store
        .begin_write(&auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    let old = tx
        .snapshot(req.to_version)
        .await?
        .ok_or_else(|| AppError::not_found("config version", &req.to_version.to_string()))
        .map_err(|e| e.with_field("to_version"))?;
    let mut snapshot: strata_core::Snapshot = serde_json::from_str(&old.body).map_err(|e| {
        AppError::internal(format!(
            "stored snapshot {} is unreadable: {e}",
            old.version
        ))
    })?;
    let extra: SnapshotExtra = serde_json::from_str(&old.extra).unwrap_or_default();
    snapshot.version = tx.version;
    let live = tx
        .store_snapshot(
            &snapshot,
            &extra,
            &format!("rollback to {}", req.to_version),
        )
        .await?
        .map_err(invalid_snapshot)?;
    tx.audit(
        "config.rollback",
        "config",
        &tx.version.to_string(),
        None,
        Some(&json!({"to_version": req.to_version})),
        None,
    )
    .await?;
    let version = state.finish(tx, live).await?;
    Ok(Json(
        json!({"version": version, "rolled_back_to": req.to_version}),
    ))
}
