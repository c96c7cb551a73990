//! The metric registry, guardrail definitions, the bot detection limits, the
//! key metrics and the global holdout with its impact over HTTP: the
//! handlers parse, call [`RegistryService`] or [`HoldoutService`] and render.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::ApiJson;
use crate::model::{
    BotDetectionRecord, GuardrailDef, HoldoutRecord, HoldoutRequest, KeyMetricsRecord,
    KeyMetricsRequest, MetricDef,
};
use crate::schema;
use crate::service::registry::{HoldoutChange, Kind, RegistryService};
use crate::service::{HoldoutImpact, HoldoutService};
use crate::state::AppState;

pub use crate::service::registry::{definition_of, STORED_FIELDS};

/// `POST /api/v1/metrics` (analyst, admin)
#[utoipa::path(post, path = "/api/v1/metrics", tag = "metrics", request_body = schema::MetricDef,
    responses((status = 201, body = schema::MetricDef), (status = 400), (status = 409)))]
pub async fn create_metric(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(def): ApiJson<MetricDef>,
) -> Result<impl IntoResponse, AppError> {
    let v = RegistryService::new(state)
        .create_metric(&auth.actor(), def)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/metrics`
#[utoipa::path(get, path = "/api/v1/metrics", tag = "metrics", responses((status = 200, description = "{items: [MetricDef]}")))]
pub async fn list_metrics(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    list(state, auth, Kind::Metric).await
}

/// `GET /api/v1/metrics/{key}`
#[utoipa::path(get, path = "/api/v1/metrics/{key}", tag = "metrics", params(("key" = String, Path)),
    responses((status = 200, body = schema::MetricDef), (status = 404)))]
pub async fn get_metric(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    get(state, auth, Kind::Metric, &key).await
}

/// `PUT /api/v1/metrics/{key}` (analyst, admin): replaces the definition
/// while nothing relies on it (409 otherwise, naming what does).
#[utoipa::path(put, path = "/api/v1/metrics/{key}", tag = "metrics", params(("key" = String, Path)),
    request_body = schema::MetricDef,
    responses((status = 200, body = schema::MetricDef), (status = 400), (status = 404),
        (status = 409, description = "used by experiments that are not archived, or watched by a guardrail")))]
pub async fn update_metric(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(def): ApiJson<MetricDef>,
) -> Result<Json<Value>, AppError> {
    let v = RegistryService::new(state)
        .update_metric(&auth.actor(), &key, def)
        .await?;
    Ok(Json(v))
}

/// `DELETE /api/v1/metrics/{key}` (soft delete). Refused (409) while an
/// experiment that is not archived uses the metric: its results could no
/// longer be analysed or published.
#[utoipa::path(delete, path = "/api/v1/metrics/{key}", tag = "metrics", params(("key" = String, Path)),
    responses((status = 204), (status = 404),
        (status = 409, description = "used by experiments that are not archived")))]
pub async fn delete_metric(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<StatusCode, AppError> {
    delete(state, auth, Kind::Metric, &key).await
}

/// `POST /api/v1/guardrails` (admin)
#[utoipa::path(post, path = "/api/v1/guardrails", tag = "guardrails", request_body = schema::GuardrailDef,
    responses((status = 201, body = schema::GuardrailDef), (status = 400), (status = 409)))]
pub async fn create_guardrail(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(def): ApiJson<GuardrailDef>,
) -> Result<impl IntoResponse, AppError> {
    let v = RegistryService::new(state)
        .create_guardrail(&auth.actor(), def)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/guardrails`
#[utoipa::path(get, path = "/api/v1/guardrails", tag = "guardrails", responses((status = 200, description = "{items: [GuardrailDef]}")))]
pub async fn list_guardrails(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    list(state, auth, Kind::Guardrail).await
}

/// `GET /api/v1/guardrails/{key}`
#[utoipa::path(get, path = "/api/v1/guardrails/{key}", tag = "guardrails", params(("key" = String, Path)),
    responses((status = 200, body = schema::GuardrailDef), (status = 404)))]
pub async fn get_guardrail(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    get(state, auth, Kind::Guardrail, &key).await
}

/// `DELETE /api/v1/guardrails/{key}` (soft delete). Refused (409) while an
/// experiment that is not archived names the definition among its
/// guardrails.
#[utoipa::path(delete, path = "/api/v1/guardrails/{key}", tag = "guardrails", params(("key" = String, Path)),
    responses((status = 204), (status = 404),
        (status = 409, description = "used by experiments that are not archived")))]
pub async fn delete_guardrail(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<StatusCode, AppError> {
    delete(state, auth, Kind::Guardrail, &key).await
}

async fn list(state: AppState, auth: Auth, kind: Kind) -> Result<Json<Value>, AppError> {
    let items = RegistryService::new(state)
        .list(&auth.actor(), kind)
        .await?;
    Ok(Json(json!({ "items": items })))
}

async fn get(state: AppState, auth: Auth, kind: Kind, key: &str) -> Result<Json<Value>, AppError> {
    let item = RegistryService::new(state)
        .get(&auth.actor(), kind, key)
        .await?;
    Ok(Json(item))
}

async fn delete(
    state: AppState,
    auth: Auth,
    kind: Kind,
    key: &str,
) -> Result<StatusCode, AppError> {
    RegistryService::new(state)
        .delete(&auth.actor(), kind, key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/bot-detection`: the limits every analysis applies (the
/// defaults, revision 0, when never set).
#[utoipa::path(get, path = "/api/v1/bot-detection", tag = "metrics",
    responses((status = 200, body = BotDetectionRecord)))]
pub async fn get_bot_detection(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<BotDetectionRecord>, AppError> {
    let r = RegistryService::new(state)
        .get_bot_detection(&auth.actor())
        .await?;
    Ok(Json(r))
}

/// `PUT /api/v1/bot-detection` (analyst, admin): replaces the limits; the
/// body is a registry document's `bot_detection` object.
#[utoipa::path(put, path = "/api/v1/bot-detection", tag = "metrics",
    request_body(content = Object, description = "{enabled, per_minute, per_day, event_types}"),
    responses((status = 200, body = BotDetectionRecord)))]
pub async fn put_bot_detection(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(limits): ApiJson<strata_model::BotDetection>,
) -> Result<Json<BotDetectionRecord>, AppError> {
    let r = RegistryService::new(state)
        .set_bot_detection(&auth.actor(), limits)
        .await?;
    Ok(Json(r))
}

/// `GET /api/v1/holdout`
#[utoipa::path(get, path = "/api/v1/holdout", tag = "holdout",
    responses((status = 200, body = HoldoutRecord), (status = 404, description = "no holdout set")))]
pub async fn get_holdout(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<HoldoutRecord>, AppError> {
    let h = RegistryService::new(state).holdout(&auth.actor()).await?;
    Ok(Json(h))
}

/// `PUT /api/v1/holdout` (admin): sets the percent and the schedule of
/// rotations; a new salt on first creation and when `rotate_salt` is true.
/// A new salt or percent ends the holdout's period and starts the next.
#[utoipa::path(put, path = "/api/v1/holdout", tag = "holdout", request_body = HoldoutRequest,
    responses((status = 200, body = HoldoutRecord), (status = 400)))]
pub async fn put_holdout(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<HoldoutRequest>,
) -> Result<Json<HoldoutRecord>, AppError> {
    let change = HoldoutChange {
        percent: Some(req.percent),
        rotate: req.rotate_salt,
        rotate_every_days: req.rotate_every_days,
    };
    let h = RegistryService::new(state)
        .set_holdout(&auth.actor(), change)
        .await?;
    Ok(Json(h))
}

/// `GET /api/v1/holdout/impact`: the holdout, the key metrics and every
/// period with its latest (or final) look and attribution.
#[utoipa::path(get, path = "/api/v1/holdout/impact", tag = "holdout",
    responses((status = 200, body = HoldoutImpact)))]
pub async fn holdout_impact(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<HoldoutImpact>, AppError> {
    let i = HoldoutService::new(state).impact(&auth.actor()).await?;
    Ok(Json(i))
}

/// `GET /api/v1/key-metrics`: the metrics the holdout's looks measure
/// (empty, revision 0, when never set).
#[utoipa::path(get, path = "/api/v1/key-metrics", tag = "metrics",
    responses((status = 200, body = KeyMetricsRecord)))]
pub async fn get_key_metrics(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<KeyMetricsRecord>, AppError> {
    let r = RegistryService::new(state)
        .get_key_metrics(&auth.actor())
        .await?;
    Ok(Json(r))
}

/// `PUT /api/v1/key-metrics` (analyst, admin): replaces the key metrics.
#[utoipa::path(put, path = "/api/v1/key-metrics", tag = "metrics",
    request_body = KeyMetricsRequest,
    responses((status = 200, body = KeyMetricsRecord), (status = 400)))]
pub async fn put_key_metrics(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<KeyMetricsRequest>,
) -> Result<Json<KeyMetricsRecord>, AppError> {
    let r = RegistryService::new(state)
        .set_key_metrics(&auth.actor(), req.metrics)
        .await?;
    Ok(Json(r))
}

/// `POST /api/v1/holdout/rotate` (admin): a new salt, same percent.
#[utoipa::path(post, path = "/api/v1/holdout/rotate", tag = "holdout",
    responses((status = 200, body = HoldoutRecord), (status = 404)))]
pub async fn rotate_holdout(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<HoldoutRecord>, AppError> {
    let change = HoldoutChange {
        rotate: true,
        ..HoldoutChange::default()
    };
    let h = RegistryService::new(state)
        .set_holdout(&auth.actor(), change)
        .await?;
    Ok(Json(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and validates a metric body as `create_metric` does.
    fn check(body: Value) -> Result<MetricDef, AppError> {
        let def: MetricDef = crate::json::parse(body.to_string().as_bytes())?;
        def.validate().map_err(crate::error::model_error)?;
        crate::service::registry::require_filter(&def)?;
        Ok(def)
    }

    #[test]
    fn unknown_operators_are_named_in_the_apis_terms() {
        let e = check(json!({"key": "m", "type": "mean",
            "filter": {"type": "a", "value": {"between": 1}}}))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("filter.value.between"));
        assert!(
            e.message.contains(
                "unknown operator \"between\"; expected eq, ne, gt, gte, lt, lte, in or not_in"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn model_rules_are_validation_errors_with_their_field() {
        let e = check(json!({"key": "m", "type": "count",
            "filter": {"type": "t".repeat(129)}}))
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref(), e.message.as_str()),
            (
                "validation",
                Some("filter.type"),
                "filter.type must be at most 128 bytes"
            )
        );
    }

    #[test]
    fn the_api_requires_filters() {
        let e = check(json!({"key": "m", "type": "binomial"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("filter"));
        let e = check(json!({"key": "r", "type": "ratio",
            "numerator": {"type": "sum", "filter": {"type": "a"}},
            "denominator": {"type": "count"}}))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("denominator.filter"));
        assert!(check(json!({"key": "r", "type": "ratio",
            "numerator": {"type": "sum", "filter": {"type": "a"}},
            "denominator": {"type": "count", "filter": {"type": "b"}}}))
        .is_ok());
    }
}
