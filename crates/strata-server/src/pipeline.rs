//! The data-collection plane (strata-pipeline) inside `strata serve`.
//!
//! The collection endpoints (`/collect/v1/exposures`, `/collect/v1/events`)
//! write to the embedded segment log under the data directory, authenticated
//! by this server's ingestion keys; the background compactor turns the log
//! into partitioned Parquet. This module adds what needs the control plane:
//! the admin operations (compact now, delete a unit's data — audited) and
//! retention, which needs the experiments' end dates.
//!
//! One process owns a pipeline directory at a time (an exclusive lock on
//! `pipeline.lock`), so `strata compact` cannot race a running server.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::Json;
use serde_json::Value;
use strata_pipeline::http::{Ingest, IngestConfig};
use strata_pipeline::{Authorizer, LocalStore, RetentionPolicy};

use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::parse_rfc3339;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Its directory (log segments, dedup index, Parquet).
    pub dir: PathBuf,
    /// Log, compaction and deduplication settings.
    pub store: strata_pipeline::StoreOptions,
    /// Ingestion limits.
    pub ingest: IngestConfig,
    /// Hot retention (experiment end dates are filled in from the store).
    pub retention: RetentionPolicy,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl PipelineConfig {
    /// Defaults under `data_dir/pipeline`.
    pub fn under(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pipeline"),
            store: strata_pipeline::StoreOptions::default(),
            ingest: IngestConfig::default(),
            retention: RetentionPolicy::default(),
            retention_interval: Duration::from_secs(3600),
        }
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The durable log and its Parquet output.
    pub store: Arc<LocalStore>,
    /// The collection endpoints.
    pub ingest: Ingest,
    /// Retention settings.
    pub retention: RetentionPolicy,
    _lock: File,
}

/// Takes the exclusive lock of a pipeline directory (created if needed).
pub fn lock_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create pipeline directory {}: {e}", dir.display()))?;
    let path = dir.join("pipeline.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "pipeline directory {} is in use by another process (a running strata serve?)",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

impl Pipeline {
    /// Locks the directory, recovers the log and mounts ingestion over it.
    pub async fn open(cfg: &PipelineConfig, auth: Arc<dyn Authorizer>) -> Result<Self, String> {
        let lock = lock_dir(&cfg.dir)?;
        let store = LocalStore::open(&cfg.dir, cfg.store.clone())
            .await
            .map_err(|e| format!("pipeline store: {e}"))?;
        let sink: Arc<dyn strata_pipeline::Sink> = store.clone();
        let ingest = Ingest::new(sink, auth, cfg.ingest.clone());
        Ok(Self {
            store,
            ingest,
            retention: cfg.retention.clone(),
            _lock: lock,
        })
    }

    /// Prometheus text of ingestion and storage.
    pub fn render_metrics(&self, out: &mut String) {
        self.ingest.render_metrics(out);
        self.store.render_metrics(out);
    }
}

fn pipeline(state: &AppState) -> Result<&Arc<Pipeline>, AppError> {
    state.pipeline.as_ref().ok_or_else(|| {
        AppError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "the event pipeline is not enabled on this server",
        )
    })
}

fn pipeline_error(e: &strata_pipeline::StoreError) -> AppError {
    AppError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "pipeline_unavailable",
        e.to_string(),
    )
}

/// `POST /api/v1/pipeline/compact` (admin): compacts everything durable in the log now.
#[utoipa::path(post, path = "/api/v1/pipeline/compact", tag = "pipeline",
    responses((status = 200, description = "{segments, log_bytes, exposures, events, files}")))]
pub async fn compact(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::DataAdmin).await?;
    let r = pipeline(&state)?
        .store
        .compact_now()
        .await
        .map_err(|e| pipeline_error(&e))?;
    Ok(Json(serde_json::to_value(&r).unwrap_or(Value::Null)))
}

/// `DELETE /api/v1/units/{unit_id}/data` (admin): erases a unit's exposures
/// and events from the log and the Parquet files (right to deletion), audited.
#[utoipa::path(delete, path = "/api/v1/units/{unit_id}/data", tag = "pipeline",
    params(("unit_id" = String, Path)),
    responses((status = 200, description = "what was removed")))]
pub async fn delete_unit(
    State(state): State<AppState>,
    auth: Auth,
    UrlPath(unit_id): UrlPath<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::DataAdmin).await?;
    if unit_id.is_empty() {
        return Err(AppError::validation("unit_id", "empty unit id"));
    }
    let r = pipeline(&state)?
        .store
        .delete_unit(&unit_id)
        .await
        .map_err(|e| pipeline_error(&e))?;
    let detail = format!(
        "removed {} exposures and {} events; {} files rewritten, {} deleted",
        r.exposures_removed, r.events_removed, r.files_rewritten, r.files_deleted
    );
    state
        .store
        .audit_event(
            &auth.actor(),
            "unit.delete_data",
            "unit",
            &unit_id,
            Some(&detail),
        )
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(serde_json::to_value(&r).unwrap_or(Value::Null)))
}

/// Applies hot retention now: exposures of experiments that ended more than
/// the configured time ago, events older than the event retention.
pub async fn apply_retention(state: &AppState) -> Result<(), String> {
    let Some(p) = state.pipeline.as_ref() else {
        return Ok(());
    };
    let mut policy = p.retention.clone();
    let experiments = state.store.experiments().await.map_err(|e| e.to_string())?;
    let now = crate::store::now_ms().saturating_mul(1000);
    for e in experiments {
        // An experiment that has not ended keeps all its exposures.
        let end = e.ended_at.as_deref().and_then(parse_rfc3339);
        let end = end.map_or(now, |ms| ms.saturating_mul(1000));
        policy.experiment_ends.insert(e.key, end);
    }
    let r = p
        .store
        .apply_retention(now, &policy)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(report = ?r, "pipeline retention applied");
    Ok(())
}
