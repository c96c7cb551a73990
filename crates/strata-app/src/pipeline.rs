//! The data-collection plane (strata-pipeline) mounted in `strata serve`.
//!
//! The collection endpoints (`/collect/v1/exposures`, `/collect/v1/events`,
//! `/collect/v1/aliases`)
//! write to the embedded segment log under the data directory, authenticated
//! by the control plane's ingestion keys; the background compactor turns the
//! log into partitioned Parquet. This module adds what needs the control
//! plane: the admin operations (compact now, delete a unit's data — audited)
//! and retention, a background task that needs the experiments' end dates.
//!
//! One process owns a pipeline directory at a time (an exclusive lock on
//! `pipeline.lock`, [`strata_pipeline::lock_dir`]), so `strata compact`
//! cannot race a running server.
//!
//! With `--ingest nats://…` ([`Ingestion::JetStream`]) the records go to a
//! NATS JetStream stream instead of the embedded log ([`Storage::Stream`]):
//! every ingest node publishes to it, and the node holding the jobs lease
//! compacts it into its Parquet tree — the tree the jobs read.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use serde_json::Value;
use strata_pipeline::http::{Ingest, IngestConfig};
use strata_pipeline::nats::{CompactorOptions, NatsError, NatsOptions};
use strata_pipeline::{
    AuthDenied, Authorizer, Catalog, CompactGate, CompactionReport, DeletionReport, LocalStore,
    Pressure, ReadLease, RetentionPolicy, RetentionReport, StoreError, StreamStore,
    StreamStoreOptions,
};
use strata_server::auth::{principal, Auth, KeyCache, KeyKind, Perm};
use strata_server::mount::{BoxFuture, Mount};
use strata_server::store::parse_rfc3339;
use strata_server::{AppError, AppState, ConfigStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::catalog::StoreCatalog;

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
    /// Whether this node serves `/collect/v1/*` (a node with only the jobs
    /// role opens the pipeline to read its data, and collects nothing).
    pub collect: bool,
    /// Where acknowledged records go.
    pub ingestion: Ingestion,
    /// Where the Parquet tree is when it is not `dir/parquet`: somewhere
    /// every jobs node reaches, so that whichever leads compacts into the
    /// same tree (JetStream ingestion only; the embedded log keeps its
    /// Parquet beside it).
    pub storage: Option<StorageLocation>,
    /// Whether this node compacts a JetStream stream into its Parquet tree
    /// while it holds the jobs lease (a node with the jobs role). The
    /// embedded log is always compacted by its own process.
    pub compact: bool,
}

/// Where a shared Parquet tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A directory on a volume every jobs node mounts.
    Dir(PathBuf),
    /// An S3 (or compatible) prefix, `s3://bucket/prefix`, with the local
    /// `dir/parquet` as the compacting node's working copy
    /// ([`strata_pipeline::mirror`]); credentials and endpoint from the
    /// `AWS_*` environment variables.
    S3(String),
}

/// Where a node's acknowledged records go.
#[derive(Debug, Clone, Default)]
pub enum Ingestion {
    /// The embedded segment log under the pipeline directory, compacted by
    /// this process.
    #[default]
    Local,
    /// A NATS JetStream stream shared by every ingest node, compacted by
    /// the jobs leader.
    JetStream {
        /// The server, `nats://host:4222`.
        url: String,
        /// The stream, its subjects and the compactor's consumer.
        nats: NatsOptions,
    },
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
            collect: true,
            ingestion: Ingestion::Local,
            storage: None,
            compact: true,
        }
    }
}

/// Why a pipeline operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The embedded log or its Parquet tree.
    #[error(transparent)]
    Local(#[from] StoreError),
    /// The JetStream stream or its compactor.
    #[error(transparent)]
    Stream(#[from] NatsError),
}

/// The durable store under a pipeline: the embedded log or JetStream, with
/// the operations the jobs and the admin endpoints need of either.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The embedded segment log.
    Local(Arc<LocalStore>),
    /// A JetStream stream.
    Stream(Arc<StreamStore>),
}

impl Storage {
    /// The sink the collection endpoints write to.
    pub fn sink(&self) -> Arc<dyn strata_pipeline::Sink> {
        match self {
            Self::Local(s) => s.clone(),
            Self::Stream(s) => s.clone(),
        }
    }

    /// The root of the Parquet tree.
    pub fn parquet_dir(&self) -> &Path {
        match self {
            Self::Local(s) => s.parquet_dir(),
            Self::Stream(s) => s.parquet_dir(),
        }
    }

    /// Compacts every record acknowledged so far into Parquet.
    pub async fn compact_now(&self) -> Result<CompactionReport, StorageError> {
        Ok(match self {
            Self::Local(s) => s.compact_now().await?,
            Self::Stream(s) => s.compact_now().await?,
        })
    }

    /// A reader's hold on the Parquet tree ([`LocalStore::read_lease`]).
    pub async fn read_lease(&self) -> ReadLease {
        match self {
            Self::Local(s) => s.read_lease().await,
            Self::Stream(s) => s.read_lease().await,
        }
    }

    /// Removes every stored record of a unit.
    pub async fn delete_unit(&self, unit_id: &str) -> Result<DeletionReport, StorageError> {
        Ok(match self {
            Self::Local(s) => s.delete_unit(unit_id).await?,
            Self::Stream(s) => s.delete_unit(unit_id).await?,
        })
    }

    /// Whether this node rewrites the Parquet tree (always with the
    /// embedded log; over JetStream, while it compacts the stream).
    pub fn writes_parquet(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Stream(s) => s.is_compacting(),
        }
    }

    /// Applies hot retention to the Parquet tree.
    pub async fn apply_retention(
        &self,
        now_micros: i64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport, StorageError> {
        Ok(match self {
            Self::Local(s) => s.apply_retention(now_micros, policy).await?,
            Self::Stream(s) => s.apply_retention(now_micros, policy).await?,
        })
    }

    /// Backlog and compaction lag.
    pub fn pressure(&self) -> Pressure {
        self.sink().pressure()
    }

    /// Prometheus text of the store.
    pub fn render_metrics(&self, out: &mut String) {
        match self {
            Self::Local(s) => s.render_metrics(out),
            Self::Stream(s) => s.render_metrics(out),
        }
    }

    /// Stops background work; acknowledged records stay durable.
    pub async fn shutdown(&self) {
        match self {
            Self::Local(s) => s.shutdown().await,
            Self::Stream(s) => s.shutdown().await,
        }
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The durable store and its Parquet output.
    pub store: Storage,
    /// The collection endpoints.
    pub ingest: Ingest,
    /// Retention settings.
    pub retention: RetentionPolicy,
    _lock: File,
}

impl Pipeline {
    /// Locks the directory, recovers the log (or connects to the stream)
    /// and mounts ingestion over it. Exposures are checked against
    /// `catalog` when one is given. Over JetStream this node compacts the
    /// stream while `compact` is open.
    pub async fn open(
        cfg: &PipelineConfig,
        auth: Arc<dyn Authorizer>,
        catalog: Option<Arc<dyn Catalog>>,
        compact: CompactGate,
    ) -> Result<Self, String> {
        let lock = strata_pipeline::lock_dir(&cfg.dir).map_err(|e| e.to_string())?;
        let store =
            match &cfg.ingestion {
                Ingestion::Local if cfg.storage.is_some() => return Err(
                    "a storage location other than the data directory needs JetStream ingestion \
                     (--ingest nats://…): the embedded log keeps its Parquet beside it"
                        .into(),
                ),
                Ingestion::Local => Storage::Local(
                    LocalStore::open(&cfg.dir, cfg.store.clone())
                        .await
                        .map_err(|e| format!("pipeline store: {e}"))?,
                ),
                Ingestion::JetStream { url, nats } => {
                    let own = cfg.dir.join("parquet");
                    let (parquet_dir, mirror) = match &cfg.storage {
                        None => (own, None),
                        Some(StorageLocation::Dir(d)) => (d.clone(), None),
                        Some(StorageLocation::S3(u)) => {
                            let (store, prefix) = strata_pipeline::Mirror::s3_from_env(u)
                                .map_err(|e| format!("storage: {e}"))?;
                            let m = strata_pipeline::Mirror::new(store, &prefix, u, &own);
                            (own, Some(Arc::new(m)))
                        }
                    };
                    let opts = StreamStoreOptions {
                        url: url.clone(),
                        nats: NatsOptions {
                            partitions: cfg.store.partitions,
                            ..nats.clone()
                        },
                        compactor: CompactorOptions::default(),
                        parquet_dir,
                        row_group_rows: cfg.store.row_group_rows,
                        mirror,
                    };
                    Storage::Stream(
                        StreamStore::open(opts, compact)
                            .await
                            .map_err(|e| format!("jetstream ingestion: {e}"))?,
                    )
                }
            };
        let sink = store.sink();
        let ingest = match catalog {
            Some(c) => Ingest::with_catalog(sink, auth, c, cfg.ingest.clone()),
            None => Ingest::new(sink, auth, cfg.ingest.clone()),
        };
        Ok(Self {
            store,
            ingest,
            retention: cfg.retention.clone(),
            _lock: lock,
        })
    }

    /// The Parquet tree as the analysis engine reads it (exposures and
    /// events under one root, told apart by their `kind=` directories).
    pub fn data_source(&self) -> strata_analysis::DataSource {
        let root = self.store.parquet_dir().display().to_string();
        strata_analysis::DataSource {
            exposures: root.clone(),
            events: root,
            aliases: None,
        }
    }

    /// Prometheus text of ingestion and storage.
    pub fn render_metrics(&self, out: &mut String) {
        self.ingest.render_metrics(out);
        self.store.render_metrics(out);
    }
}

fn pipeline_error(e: &StorageError) -> AppError {
    AppError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "pipeline_unavailable",
        e.to_string(),
    )
}

/// `POST /api/v1/pipeline/compact` (admin): compacts everything durable in the log now.
#[utoipa::path(post, path = "/api/v1/pipeline/compact", tag = "pipeline",
    responses((status = 200, description = "{segments, log_bytes, exposures, events, files}")))]
pub async fn compact(
    State(state): State<AppState>,
    Extension(pipeline): Extension<Arc<Pipeline>>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::DataAdmin).await?;
    let r = pipeline
        .store
        .compact_now()
        .await
        .map_err(|e| pipeline_error(&e))?;
    Ok(Json(serde_json::to_value(&r).unwrap_or(Value::Null)))
}

/// `DELETE /api/v1/units/{unit_id}/data` (admin): erases a unit's exposures,
/// events and aliases from the log and the Parquet files (right to
/// deletion), with the anonymous ids aliased to it, audited.
#[utoipa::path(delete, path = "/api/v1/units/{unit_id}/data", tag = "pipeline",
    params(("unit_id" = String, Path)),
    responses((status = 200, description = "what was removed")))]
pub async fn delete_unit(
    State(state): State<AppState>,
    Extension(pipeline): Extension<Arc<Pipeline>>,
    auth: Auth,
    UrlPath(unit_id): UrlPath<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::DataAdmin).await?;
    if unit_id.is_empty() {
        return Err(AppError::validation("unit_id", "empty unit id"));
    }
    let r = pipeline
        .store
        .delete_unit(&unit_id)
        .await
        .map_err(|e| pipeline_error(&e))?;
    let linked = if r.linked_ids.is_empty() {
        String::new()
    } else {
        format!(" (with the ids aliased to it: {})", r.linked_ids.join(", "))
    };
    let detail = format!(
        "removed {} exposures, {} events and {} aliases{linked}; {} files rewritten, {} deleted",
        r.exposures_removed,
        r.events_removed,
        r.aliases_removed,
        r.files_rewritten,
        r.files_deleted
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
pub async fn apply_retention(state: &AppState, p: &Pipeline) -> Result<(), String> {
    if !p.store.writes_parquet() {
        // Another node compacts the stream, and applies retention there.
        return Ok(());
    }
    let mut policy = p.retention.clone();
    let experiments = state.store.experiments().await.map_err(|e| e.to_string())?;
    let now = strata_server::store::now_ms().saturating_mul(1000);
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

/// Ingestion keys for the collection endpoints: only keys of kind `ingest`
/// may write exposures and events.
#[derive(Debug, Clone)]
pub struct IngestAuthorizer {
    /// Where keys are stored.
    pub store: ConfigStore,
    /// The control plane's key cache.
    pub keys: Arc<KeyCache>,
}

impl Authorizer for IngestAuthorizer {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
    ) -> strata_pipeline::BoxFuture<'a, Result<strata_pipeline::Principal, AuthDenied>> {
        Box::pin(async move {
            let p = principal(&self.store, &self.keys, token)
                .await
                .map_err(|_| AuthDenied::Unauthenticated)?;
            if p.kind != KeyKind::Ingest {
                return Err(AuthDenied::Forbidden(format!(
                    "missing permission events:write; a {} key cannot ingest",
                    p.kind.as_str()
                )));
            }
            Ok(strata_pipeline::Principal {
                key_id: p.key_id.clone(),
            })
        })
    }
}

/// The pipeline as a part of `strata serve`: the collection endpoints, the
/// admin operations, retention in the background and the writer drained at
/// shutdown.
#[derive(Debug)]
pub struct PipelineMount {
    pipeline: Arc<Pipeline>,
    state: AppState,
    retention_interval: Duration,
    collect: bool,
}

impl PipelineMount {
    /// Opens the pipeline under `cfg.dir`, authenticated by the control
    /// plane's ingestion keys, its exposures checked against the control
    /// plane's experiments.
    /// Over JetStream, the node compacts the stream while `compact` is
    /// open (the jobs leader).
    pub async fn open(
        cfg: &PipelineConfig,
        state: &AppState,
        compact: CompactGate,
    ) -> Result<Self, String> {
        let auth = Arc::new(IngestAuthorizer {
            store: state.store.clone(),
            keys: state.keys.clone(),
        });
        let catalog = Arc::new(StoreCatalog::new(state));
        Ok(Self {
            pipeline: Arc::new(Pipeline::open(cfg, auth, Some(catalog), compact).await?),
            state: state.clone(),
            retention_interval: cfg.retention_interval,
            collect: cfg.collect,
        })
    }

    /// The running pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(compact, delete_unit),
    tags((name = "pipeline", description = "event pipeline operations (admin)"))
)]
struct PipelineDoc;

impl Mount for PipelineMount {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    fn routes(&self) -> Router {
        let admin = Router::new()
            .route("/api/v1/pipeline/compact", post(compact))
            .route("/api/v1/units/{unit_id}/data", delete(delete_unit))
            .layer(Extension(self.pipeline.clone()))
            .with_state(self.state.clone());
        if self.collect {
            admin.merge(self.pipeline.ingest.router())
        } else {
            admin
        }
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(PipelineDoc::openapi())
    }

    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let state = self.state.clone();
        let pipeline = self.pipeline.clone();
        let interval = self.retention_interval;
        vec![tokio::spawn(async move {
            // The first pass runs soon after start, as the log may hold data
            // past retention from before a restart.
            let mut wait = state.settings.poll_interval;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if let Err(e) = apply_retention(&state, &pipeline).await {
                    tracing::warn!(error = %e, "pipeline retention failed");
                }
                wait = interval;
            }
        })]
    }

    fn render_metrics(&self, out: &mut String) {
        self.pipeline.render_metrics(out);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Acknowledged records are already durable; this drains the writer.
        Box::pin(self.pipeline.store.shutdown())
    }
}
