//! Layers over HTTP: the handlers parse, call [`LayerService`] and render.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::ApiJson;
use crate::model::{LayerRecord, LayerRequest};
use crate::service::layers::LayerService;
use crate::state::AppState;

pub use crate::service::layers::Allocation;

/// `POST /api/v1/layers` (admin)
#[utoipa::path(post, path = "/api/v1/layers", tag = "layers", request_body = LayerRequest,
    responses((status = 201, body = LayerRecord), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<LayerRequest>,
) -> Result<impl IntoResponse, AppError> {
    let rec = LayerService::new(state).create(&auth.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// `GET /api/v1/layers`
#[utoipa::path(get, path = "/api/v1/layers", tag = "layers",
    responses((status = 200, description = "{items: [layer with allocated, free, free_buckets, utilisation]}")))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, AppError> {
    let items = LayerService::new(state).list(&auth.actor()).await?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/layers/{key}`
#[utoipa::path(get, path = "/api/v1/layers/{key}", tag = "layers", params(("key" = String, Path)),
    responses((status = 200, description = "the layer with allocated, free, free_buckets, utilisation"), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    let view = LayerService::new(state).get(&auth.actor(), &key).await?;
    Ok(Json(json!(view)))
}

/// The body of `POST /api/v1/layers/{key}/allocate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateRequest {
    /// Buckets wanted (1–1000).
    pub size: i64,
}

/// `POST /api/v1/layers/{key}/allocate`: finds a free range (first fit); the
/// range is reserved when an experiment is created with it.
#[utoipa::path(post, path = "/api/v1/layers/{key}/allocate", tag = "layers", params(("key" = String, Path)),
    request_body = AllocateRequest, responses((status = 200, description = "{layer, range}"), (status = 409, description = "no free range")))]
pub async fn allocate(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<AllocateRequest>,
) -> Result<Json<Value>, AppError> {
    let range = LayerService::new(state)
        .allocate(&auth.actor(), &key, req.size)
        .await?;
    Ok(Json(json!({"layer": key, "range": range})))
}

/// The body of `POST /api/v1/layers/{key}/dry-run`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// Proposed `[start, end)`.
    pub range: [i64; 2],
}

/// `POST /api/v1/layers/{key}/dry-run`: which experiments a proposed range would overlap.
#[utoipa::path(post, path = "/api/v1/layers/{key}/dry-run", tag = "layers", params(("key" = String, Path)),
    request_body = DryRunRequest, responses((status = 200, description = "{layer, range, ok, overlaps}")))]
pub async fn dry_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<DryRunRequest>,
) -> Result<Json<Value>, AppError> {
    let overlaps = LayerService::new(state)
        .dry_run(&auth.actor(), &key, req.range)
        .await?;
    Ok(Json(json!({
        "layer": key,
        "range": req.range,
        "ok": overlaps.is_empty(),
        "overlaps": overlaps,
    })))
}
