//! Analysis results of experiments: the documents `strata analyze` writes
//! (`docs/results-schema.md`), published by the analysis job and read in the
//! portal.
//!
//! Results are team data (Part 13 of the design): analysts and admins read
//! every team's, experimenters and viewers only their own team's, so that a
//! competitor team cannot watch an experiment's effect before it concludes.
//! Every publication is kept (a history of looks) and audited.
//!
//! A published document is read as strata-model's results type and checked
//! against the stored experiment (its key, variants, metrics and a plausible
//! `as_of`), since one wrong look would otherwise hide every later one. A
//! look found wrong afterwards is retracted, never deleted: it stays in the
//! history, marked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::json::{self, ApiBody, ApiJson};
use crate::model::ExperimentRecord;
use crate::state::AppState;
use crate::store::{now_ms, parse_rfc3339, ResultsMeta};
use strata_model::results::Results;

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

/// How far in the future a published `as_of` may lie: the clocks of the
/// analysis job and the server may disagree by this much. A later `as_of`
/// would hide every honest look until that date.
pub const AS_OF_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The metrics an experiment's results may report: its primary, secondary
/// and guardrail metrics, with each guardrail that names a guardrail
/// definition resolved to the metric it watches.
async fn allowed_metrics(state: &AppState, e: &ExperimentRecord) -> Result<Vec<String>, AppError> {
    // Stored definitions carry a revision beside the definition's fields:
    // read as JSON, not as the (closed) guardrail definition type.
    let defs: Vec<Value> = state
        .store
        .definitions("guardrail")
        .await
        .map_err(|e| state.store_error(e))?;
    let mut keys = vec![e.primary_metric.clone()];
    keys.extend(e.secondary_metrics.iter().cloned());
    for g in &e.guardrails {
        keys.push(g.clone());
        let watched = defs
            .iter()
            .find(|d| d["key"] == g.as_str())
            .and_then(|d| d["metric"].as_str());
        if let Some(metric) = watched {
            keys.push(metric.to_owned());
        }
    }
    Ok(keys)
}

/// Checks a results document against the experiment it is published for:
/// its key, its variants, its metrics and its `as_of` (between the start of
/// the experiment and `now`, give or take the clock skew). Returns `as_of`
/// in ms.
fn validate(
    e: &ExperimentRecord,
    doc: &Results,
    metrics: &[String],
    now: i64,
) -> Result<i64, AppError> {
    let key = &e.key;
    if &doc.experiment != key {
        return Err(AppError::validation(
            "experiment",
            format!(
                "the results are of experiment {:?}, not {key:?}",
                doc.experiment
            ),
        ));
    }
    let started = e
        .started_at
        .as_deref()
        .and_then(parse_rfc3339)
        .ok_or_else(|| not_started(e))?;
    let as_of = parse_rfc3339(&doc.as_of).ok_or_else(|| {
        AppError::validation(
            "as_of",
            format!("{:?} is not an rfc 3339 timestamp", doc.as_of),
        )
    })?;
    if as_of > now + AS_OF_CLOCK_SKEW_MS {
        return Err(AppError::validation(
            "as_of",
            format!("{} is in the future", doc.as_of),
        ));
    }
    if as_of < started {
        return Err(AppError::validation(
            "as_of",
            format!(
                "{} is before the experiment started ({})",
                doc.as_of,
                e.started_at.as_deref().unwrap_or_default()
            ),
        ));
    }
    let variant = |field: String, v: &str| -> Result<(), AppError> {
        if e.variants.iter().any(|d| d.key == v) {
            Ok(())
        } else {
            Err(AppError::validation(
                field,
                format!("{v:?} is not a variant of experiment {key:?}"),
            ))
        }
    };
    for v in doc.units.keys() {
        variant(format!("units.{v}"), v)?;
    }
    for v in doc.srm.observed.keys() {
        variant(format!("srm.observed.{v}"), v)?;
    }
    for v in doc.srm.expected.keys() {
        variant(format!("srm.expected.{v}"), v)?;
    }
    for (i, m) in doc.metrics.iter().enumerate() {
        if !metrics.contains(&m.metric) {
            return Err(AppError::validation(
                format!("metrics[{i}].metric"),
                format!(
                    "{:?} is not a primary, secondary or guardrail metric of experiment {key:?}",
                    m.metric
                ),
            ));
        }
        for v in m.variants.keys() {
            variant(format!("metrics[{i}].variants.{v}"), v)?;
        }
        for (j, x) in m.effects.iter().enumerate() {
            variant(format!("metrics[{i}].effects[{j}].variant"), &x.variant)?;
            variant(format!("metrics[{i}].effects[{j}].control"), &x.control)?;
        }
    }
    Ok(as_of)
}

/// Results are refused for an experiment that never started: there is no
/// data to analyse, and a draft's definition may still change under them.
fn not_started(e: &ExperimentRecord) -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "not_started",
        format!(
            "experiment {:?} has not started (status {}); results can only be published once it has",
            e.key,
            e.status.as_str()
        ),
    )
}

/// `POST /api/v1/experiments/{key}/results`: publishes a results document.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/results", tag = "results",
    params(("key" = String, Path)), request_body = Object,
    responses((status = 201, body = ResultsMeta), (status = 400), (status = 403), (status = 404)))]
pub async fn publish(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<ResultsMeta>), AppError> {
    auth.require(&state, Perm::ResultsWrite).await?;
    let e = experiment(&state, &key).await?;
    auth.require_on(&state, Perm::ResultsWrite, Some(&e.owner_team))
        .await?;
    if e.started_at.is_none() {
        return Err(not_started(&e));
    }
    // Checked as the typed document, stored as published: a field a newer
    // analysis engine adds is kept rather than dropped.
    let typed: Results = json::parse(&body)?;
    let doc: Value = json::parse(&body)?;
    let metrics = allowed_metrics(&state, &e).await?;
    let as_of = validate(&e, &typed, &metrics, now_ms())?;
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

/// The longest accepted retraction reason, in bytes.
pub const RETRACT_REASON_MAX_BYTES: usize = 1000;

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
    auth.require(&state, Perm::ResultsRetract).await?;
    let e = experiment(&state, &key).await?;
    auth.require_on(&state, Perm::ResultsRetract, Some(&e.owner_team))
        .await?;
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(AppError::validation(
            "reason",
            "a retraction needs a reason",
        ));
    }
    if reason.len() > RETRACT_REASON_MAX_BYTES {
        return Err(AppError::validation(
            "reason",
            format!("longer than {RETRACT_REASON_MAX_BYTES} bytes"),
        ));
    }
    let missing = || AppError::not_found("results", &format!("{key}/{seq}"));
    let (meta, _) = state
        .store
        .results(&key, Some(seq))
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(missing)?;
    let already = || {
        AppError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("results {key}/{seq} are already retracted"),
        )
    };
    if meta.retracted_at.is_some() {
        return Err(already());
    }
    let done = state
        .store
        .retract_results(&key, seq, reason, &auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    if !done {
        // Retracted by someone else between the read and the update.
        return Err(already());
    }
    let (meta, _) = state
        .store
        .results(&key, Some(seq))
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(missing)?;
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
