//! Analysis results of experiments: the documents `strata analyze` writes
//! (`docs/results-schema.md`), published by the analysis job and read in the
//! portal.
//!
//! Results are team data (Part 13 of the design): analysts and admins read
//! every team's, experimenters and viewers only their own team's, so that a
//! competitor team cannot watch an experiment's effect before it concludes.
//! Every publication is kept (a history of looks) and audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::json::ApiJson;
use crate::model::ExperimentRecord;
use crate::state::AppState;
use crate::store::{parse_rfc3339, ResultsMeta};

/// A published results document with its publication metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishedResults {
    /// The experiment.
    pub experiment: String,
    /// Publication metadata.
    #[serde(flatten)]
    pub meta: ResultsMeta,
    /// The results document, as published.
    #[schema(value_type = Object)]
    pub results: Value,
}

/// The publications of an experiment's results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultsHistory {
    /// The experiment.
    pub experiment: String,
    /// Latest `as_of` first.
    pub items: Vec<ResultsMeta>,
}

async fn experiment(state: &AppState, key: &str) -> Result<ExperimentRecord, AppError> {
    state
        .store
        .experiment(key)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| AppError::not_found("experiment", key))
}

/// Checks a results document: an object about this experiment with an
/// `as_of` timestamp and a `metrics` array. Returns `as_of` in ms.
fn validate(key: &str, doc: &Value) -> Result<i64, AppError> {
    let Some(obj) = doc.as_object() else {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "validation",
            "a results document must be a json object",
        ));
    };
    match obj.get("experiment").and_then(Value::as_str) {
        Some(k) if k == key => {}
        Some(k) => {
            return Err(AppError::validation(
                "experiment",
                format!("the results are of experiment {k:?}, not {key:?}"),
            ))
        }
        None => {
            return Err(AppError::validation(
                "experiment",
                "missing the experiment key",
            ))
        }
    }
    let as_of = obj
        .get("as_of")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::validation("as_of", "missing the as_of timestamp"))?;
    let as_of = parse_rfc3339(as_of).ok_or_else(|| {
        AppError::validation("as_of", format!("{as_of:?} is not an rfc 3339 timestamp"))
    })?;
    if !obj.get("metrics").is_some_and(Value::is_array) {
        return Err(AppError::validation("metrics", "missing the metrics array"));
    }
    Ok(as_of)
}

/// `POST /api/v1/experiments/{key}/results`: publishes a results document.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/results", tag = "results",
    params(("key" = String, Path)), request_body = Object,
    responses((status = 201, body = ResultsMeta), (status = 400), (status = 403), (status = 404)))]
pub async fn publish(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(doc): ApiJson<Value>,
) -> Result<(StatusCode, Json<ResultsMeta>), AppError> {
    auth.require(&state, Perm::ResultsWrite).await?;
    let e = experiment(&state, &key).await?;
    auth.require_on(&state, Perm::ResultsWrite, Some(&e.owner_team))
        .await?;
    let as_of = validate(&key, &doc)?;
    let seq = state
        .store
        .insert_results(&key, &e.owner_team, as_of, &doc, &auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    let (meta, _) = state
        .store
        .results(&key, Some(seq))
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| AppError::internal("published results vanished"))?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// `GET /api/v1/experiments/{key}/results`: the latest results (by `as_of`).
#[utoipa::path(get, path = "/api/v1/experiments/{key}/results", tag = "results",
    params(("key" = String, Path)),
    responses((status = 200, body = PublishedResults), (status = 403), (status = 404)))]
pub async fn latest(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<PublishedResults>, AppError> {
    read(state, auth, key, None).await
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
    read(state, auth, key, Some(seq)).await
}

async fn read(
    state: AppState,
    auth: Auth,
    key: String,
    seq: Option<u64>,
) -> Result<Json<PublishedResults>, AppError> {
    auth.require(&state, Perm::ResultsRead).await?;
    let e = experiment(&state, &key).await?;
    auth.require_on(&state, Perm::ResultsRead, Some(&e.owner_team))
        .await?;
    let (meta, results) = state
        .store
        .results(&key, seq)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| match seq {
            Some(seq) => AppError::not_found("results", &format!("{key}/{seq}")),
            None => AppError::not_found("results of experiment", &key),
        })?;
    Ok(Json(PublishedResults {
        experiment: key,
        meta,
        results,
    }))
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
    auth.require(&state, Perm::ResultsRead).await?;
    let e = experiment(&state, &key).await?;
    auth.require_on(&state, Perm::ResultsRead, Some(&e.owner_team))
        .await?;
    let items = state
        .store
        .results_history(&key)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(ResultsHistory {
        experiment: key,
        items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_results_document_names_its_experiment_and_time() {
        let ok = json!({"experiment": "e", "as_of": "2026-01-15T00:00:00Z", "metrics": []});
        assert_eq!(validate("e", &ok).unwrap(), 1_768_435_200_000);
        let cases = [
            (json!([1]), None),
            (
                json!({"as_of": "2026-01-15T00:00:00Z", "metrics": []}),
                Some("experiment"),
            ),
            (
                json!({"experiment": "other", "as_of": "2026-01-15T00:00:00Z", "metrics": []}),
                Some("experiment"),
            ),
            (json!({"experiment": "e", "metrics": []}), Some("as_of")),
            (
                json!({"experiment": "e", "as_of": "yesterday", "metrics": []}),
                Some("as_of"),
            ),
            (
                json!({"experiment": "e", "as_of": "2026-01-15T00:00:00Z"}),
                Some("metrics"),
            ),
        ];
        for (doc, field) in cases {
            let err = validate("e", &doc).unwrap_err();
            assert_eq!(err.field.as_deref(), field, "{doc}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }
}
