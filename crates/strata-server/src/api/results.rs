//! Analysis results over HTTP: publish, retract and read the looks of an
//! experiment. The handlers parse, call [`ResultsService`] and render; what
//! is checked, and who may do what, is said there.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::{self, ApiBody, ApiJson};
use crate::service::results::{Publication, ResultsService};
use crate::state::AppState;
use crate::store::ResultsMeta;

pub use crate::service::results::{
    HistoryItem, PublishedResults, AS_OF_CLOCK_SKEW_MS, RETRACT_REASON_MAX_BYTES,
};

/// The publications of an experiment's results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultsHistory {
    /// The experiment.
    pub experiment: String,
    /// Latest `as_of` first.
    pub items: Vec<HistoryItem>,
}

/// `POST /api/v1/experiments/{key}/results`: publishes a results document.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/results", tag = "results",
    params(("key" = String, Path)), request_body = Object,
    responses((status = 201, body = ResultsMeta), (status = 400), (status = 403), (status = 404),
        (status = 409, description = "the experiment has not started")))]
pub async fn publish(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<ResultsMeta>), AppError> {
    let service = ResultsService::new(state);
    let target = service.target(&auth.actor(), &key).await?;
    // Checked as the typed document, stored as published.
    let publication = Publication {
        results: json::parse(&body)?,
        document: json::parse(&body)?,
    };
    let meta = service.publish(target, &publication).await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// The body of a retraction.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetractRequest {
    /// Why the look is retracted (kept in the history and the audit log).
    pub reason: String,
}

/// `POST /api/v1/experiments/{key}/results/{seq}/retract`: retracts a look.
/// It stays in the history and readable by `seq`, marked retracted, and is
/// never the latest again.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/results/{seq}/retract", tag = "results",
    params(("key" = String, Path), ("seq" = u64, Path)), request_body = RetractRequest,
    responses((status = 200, body = ResultsMeta), (status = 400), (status = 403), (status = 404),
        (status = 409, description = "already retracted")))]
pub async fn retract(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, seq)): Path<(String, u64)>,
    ApiJson(body): ApiJson<RetractRequest>,
) -> Result<Json<ResultsMeta>, AppError> {
    let meta = ResultsService::new(state)
        .retract(&auth.actor(), &key, seq, &body.reason)
        .await?;
    Ok(Json(meta))
}

/// `GET /api/v1/experiments/{key}/results`: the latest results (by `as_of`),
/// retracted looks left out.
#[utoipa::path(get, path = "/api/v1/experiments/{key}/results", tag = "results",
    params(("key" = String, Path)),
    responses((status = 200, body = PublishedResults), (status = 403), (status = 404)))]
pub async fn latest(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<PublishedResults>, AppError> {
    let r = ResultsService::new(state)
        .read(&auth.actor(), &key, None)
        .await?;
    Ok(Json(r))
}

/// `GET /api/v1/experiments/{key}/results/{seq}`: one publication.
#[utoipa::path(get, path = "/api/v1/experiments/{key}/results/{seq}", tag = "results",
    params(("key" = String, Path), ("seq" = u64, Path)),
    responses((status = 200, body = PublishedResults), (status = 403), (status = 404)))]
pub async fn one(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, seq)): Path<(String, u64)>,
) -> Result<Json<PublishedResults>, AppError> {
    let r = ResultsService::new(state)
        .read(&auth.actor(), &key, Some(seq))
        .await?;
    Ok(Json(r))
}

/// `GET /api/v1/experiments/{key}/results/history`: every publication, latest first.
#[utoipa::path(get, path = "/api/v1/experiments/{key}/results/history", tag = "results",
    params(("key" = String, Path)),
    responses((status = 200, body = ResultsHistory), (status = 403), (status = 404)))]
pub async fn history(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<ResultsHistory>, AppError> {
    let items = ResultsService::new(state)
        .history(&auth.actor(), &key)
        .await?;
    Ok(Json(ResultsHistory {
        experiment: key,
        items,
    }))
}
