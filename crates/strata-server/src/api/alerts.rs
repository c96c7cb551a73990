//! Alert webhooks and their deliveries over HTTP: the handlers parse, call
//! [`AlertService`] and render.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::{ApiJson, ApiQuery};
use crate::service::alerts::AlertService;
use crate::state::AppState;

pub use crate::service::alerts::WebhookRequest;

/// `POST /api/v1/alerts/webhooks` (admin): registers a webhook; the secret
/// is never returned.
#[utoipa::path(post, path = "/api/v1/alerts/webhooks", tag = "alerts", request_body = WebhookRequest,
    responses((status = 201, body = crate::store::Webhook), (status = 400), (status = 403)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> Result<impl IntoResponse, AppError> {
    let w = AlertService::new(state)
        .register(&auth.actor(), req)
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

/// `GET /api/v1/alerts/webhooks` (admin).
#[utoipa::path(get, path = "/api/v1/alerts/webhooks", tag = "alerts",
    responses((status = 200, description = "{items: [Webhook]}"), (status = 403)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    let items = AlertService::new(state).list(&auth.actor()).await?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /api/v1/alerts/webhooks/{id}` (admin): its pending deliveries
/// are dropped.
#[utoipa::path(delete, path = "/api/v1/alerts/webhooks/{id}", tag = "alerts", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    AlertService::new(state).delete(&auth.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of `GET /api/v1/alerts/deliveries`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u64>,
}

/// `GET /api/v1/alerts/deliveries` (admin): every delivery, the latest first.
#[utoipa::path(get, path = "/api/v1/alerts/deliveries", tag = "alerts", params(DeliveryParams),
    responses((status = 200, description = "{items: [Delivery]}"), (status = 403)))]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<DeliveryParams>,
) -> Result<Json<Value>, AppError> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let items = AlertService::new(state)
        .deliveries(&auth.actor(), limit)
        .await?;
    Ok(Json(json!({ "items": items })))
}
