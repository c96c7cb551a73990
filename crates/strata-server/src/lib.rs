//! Strata's control plane: the config service behind `strata serve`.
//!
//! It owns experiment definitions, layers, the metric registry, guardrail
//! definitions and the global holdout; validates them; publishes immutable,
//! versioned config snapshots in the format of `strata-core`; and distributes
//! them to SDKs by pull (`GET /sdk/v1/config`, ETag/304) and push
//! (`GET /sdk/v1/stream`, Server-Sent Events), plus remote evaluation and the
//! OpenFeature Remote Evaluation Protocol for clients without an SDK.
//!
//! Pieces, in data-flow order:
//!
//! 1. [`store::ConfigStore`] — SQLite (embedded default) or PostgreSQL, one
//!    portable migration set. Every change is one transaction that bumps the
//!    config version, applies the change with optimistic concurrency, appends
//!    to the audit log and stores the new snapshot.
//! 2. The management API ([`api`]) — lifecycle, validation, roles.
//! 3. [`live::SharedConfig`] — the compiled snapshot in memory, swapped
//!    atomically; other instances learn of new versions through PostgreSQL
//!    `LISTEN/NOTIFY` (and a polling fallback).
//! 4. The SDK endpoints ([`sdk`]).
//!
//! Architecture invariants:
//!
//! - Evaluation goes through strata-core only: the server never reimplements
//!   assignment, and a change is committed only if
//!   `strata_core::CompiledSnapshot::compile` accepts the resulting snapshot.
//! - The SDK endpoints serve the in-memory compiled snapshot, swapped
//!   atomically (arc-swap) when the version changes; it is never rebuilt per
//!   request.
//! - A store failure never stops the SDK endpoints: they keep serving the last
//!   snapshot from memory, while writes answer 503.
//! - The server has one error type, [`AppError`], rendered as
//!   `{"error": {"code", "message", "field"}}`; no panic reaches a client.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod activation;
pub mod api;
pub mod auth;
pub mod backend;
mod error;
pub mod guardrail;
pub mod json;
pub mod live;
pub mod metrics;
pub mod model;
pub mod mount;
mod openapi;
pub mod schema;
pub mod sdk;
pub mod service;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::AppError;
pub use mount::Mount;
pub use state::{AppState, Settings};
pub use store::{Backend, ConfigStore, StoreError, StoreOptions};

use crate::auth::{hash_token, new_key_record, KeyCache, KeyKind, RateLimiter, Role};
use crate::live::{LiveConfig, SharedConfig};
use crate::metrics::Metrics;
use crate::model::{LayerRecord, DEFAULT_LAYER};
use crate::store::{rfc3339, Actor};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Store connection.
    pub store: StoreOptions,
    /// Tunables.
    pub settings: Settings,
    /// A token seeded as an admin key at start (`STRATA_BOOTSTRAP_ADMIN_TOKEN`).
    pub bootstrap_admin_token: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store failed.
    #[error("config store: {0}")]
    Store(StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        error: std::io::Error,
    },
    /// The latest stored snapshot does not compile.
    #[error("stored snapshot {version} is invalid: {error}")]
    Snapshot {
        /// Its version.
        version: u64,
        /// The cause.
        error: strata_core::SnapshotError,
    },
    /// Any other start-up failure.
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its state (tests use it to simulate store outages).
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    sync: JoinHandle<()>,
    mounts: Vec<Arc<dyn Mount>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A server whose store is open and whose state is built, not yet serving:
/// the composition root builds its mounts over [`Prepared::state`], adds
/// them with [`Prepared::mount`] and starts serving with [`Prepared::serve`].
#[derive(Debug)]
pub struct Prepared {
    listen: SocketAddr,
    state: AppState,
    mounts: Vec<Arc<dyn Mount>>,
}

impl Prepared {
    /// The control plane's state (its store, keys, live config…), for mounts
    /// that need them.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Adds a part served beside the control plane.
    pub fn mount(mut self, mount: Arc<dyn Mount>) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Binds, starts serving and starts the mounts' background tasks.
    pub async fn serve(self) -> Result<Server, ServerError> {
        let Prepared {
            listen,
            state,
            mounts,
        } = self;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| ServerError::Bind {
                addr: listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| ServerError::Bind {
            addr: listen,
            error,
        })?;
        let (shutdown, rx) = watch::channel(false);
        let app = router_with(state.clone(), &mounts);
        let mut http_rx = rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = http_rx.wait_for(|s| *s).await;
            })
            .await
        });
        let sync = tokio::spawn(sync_loop(state.clone(), rx.clone()));
        let tasks = mounts.iter().flat_map(|m| m.spawn(rx.clone())).collect();
        tracing::info!(%addr, backend = state.store.backend().name(), version = state.live.version(), mounts = ?mounts.iter().map(|m| m.name()).collect::<Vec<_>>(), "strata serve listening");
        Ok(Server {
            addr,
            state,
            shutdown,
            http,
            sync,
            mounts,
            tasks,
        })
    }
}

impl Server {
    /// Connects the store, seeds the bootstrap token and the default layer,
    /// loads the latest snapshot, binds and starts serving the control plane
    /// alone.
    pub async fn start(cfg: ServerConfig) -> Result<Self, ServerError> {
        Self::prepare(cfg).await?.serve().await
    }

    /// Connects the store, seeds the bootstrap token and the default layer
    /// and loads the latest snapshot; serving starts with [`Prepared::serve`].
    pub async fn prepare(cfg: ServerConfig) -> Result<Prepared, ServerError> {
        let store = ConfigStore::open(&cfg.store).await?;
        let state = AppState {
            store,
            live: Arc::new(SharedConfig::new()),
            keys: Arc::new(KeyCache::default()),
            limiter: Arc::new(RateLimiter::new(cfg.settings.rate_limit)),
            sdk_limiter: Arc::new(RateLimiter::new(cfg.settings.sdk_rate_limit)),
            metrics: Arc::new(Metrics::default()),
            settings: Arc::new(cfg.settings.clone()),
            instances: Arc::default(),
        };
        if let Some(token) = cfg
            .bootstrap_admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            let rec = new_key_record(KeyKind::Api, Role::Admin, "", "bootstrap-admin", "system")
                .map_err(|e| ServerError::Other(e.message))?;
            state.store.ensure_key(&rec, &hash_token(token)).await?;
        }
        for (hash, key) in state.store.active_keys().await? {
            state.keys.warm(hash, &key);
        }
        ensure_default_layer(&state).await?;
        refresh(&state).await?;
        Ok(Prepared {
            listen: cfg.listen,
            state,
            mounts: Vec::new(),
        })
    }

    /// Serves until `signal` resolves, then shuts down gracefully. Open
    /// streams do not hold the shutdown up for more than a second.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        signal.await;
        self.stop().await
    }

    /// Stops serving.
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.sync.abort();
        let mut http = self.http;
        let served = tokio::time::timeout(Duration::from_secs(1), &mut http).await;
        http.abort();
        // The mounts' tasks saw the signal; a task stuck past its grace
        // period is aborted rather than holding the process up.
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop within 5 s; aborted");
                task.abort();
            }
        }
        for m in &self.mounts {
            m.shutdown().await;
        }
        match served {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServerError::Other(format!("http server: {e}"))),
            Ok(Err(e)) => Err(ServerError::Other(format!("http server task: {e}"))),
        }
    }
}

/// Creates the default layer once (serialised across instances by the version row lock).
async fn ensure_default_layer(state: &AppState) -> Result<(), ServerError> {
    if state
        .store
        .definition::<LayerRecord>("layer", DEFAULT_LAYER)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut tx = state.store.begin_write(&Actor::server()).await?;
    if tx.definition_key_taken("layer", DEFAULT_LAYER).await? {
        return Ok(()); // another instance won; dropping tx rolls back
    }
    let rec = LayerRecord {
        key: DEFAULT_LAYER.to_owned(),
        salt: format!(
            "L-{}",
            auth::random_hex(8).map_err(|e| ServerError::Other(e.message))?
        ),
        description: "experiments created without a layer".to_owned(),
        revision: 1,
        created_at: rfc3339(tx.now),
    };
    tx.put_definition("layer", DEFAULT_LAYER, &rec, 1, false)
        .await?;
    tx.audit(
        "layer.create",
        "layer",
        DEFAULT_LAYER,
        None,
        serde_json::to_value(&rec).ok().as_ref(),
        None,
    )
    .await?;
    state
        .commit(tx, "create the default layer")
        .await
        .map_err(|e| ServerError::Other(e.message))?;
    Ok(())
}

/// Loads the latest stored version if it is newer than the one served.
pub async fn refresh(state: &AppState) -> Result<(), ServerError> {
    let head = state.store.head_version().await?;
    if head <= state.live.version() {
        return Ok(());
    }
    let Some(s) = state.store.snapshot(head).await? else {
        return Ok(());
    };
    let live =
        LiveConfig::from_stored(&s.body, &s.extra).map_err(|error| ServerError::Snapshot {
            version: head,
            error,
        })?;
    if state.live.install(live) {
        state.metrics.set_config_version(head);
        tracing::info!(version = head, "loaded config version from the store");
    }
    Ok(())
}

/// Follows versions published by other instances: PostgreSQL notifications
/// when available, and a poll of the head version as a fallback.
async fn sync_loop(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut listener: Option<Box<dyn backend::ChangeListener>> = None;
    let mut subscribable = true;
    let mut last_attempt: Option<std::time::Instant> = None;
    let mut last_keys = std::time::Instant::now();
    loop {
        if subscribable
            && listener.is_none()
            && last_attempt.is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            last_attempt = Some(std::time::Instant::now());
            match state.store.listen().await {
                Ok(Some(l)) => listener = Some(l),
                // The backend has no notifications: polling only.
                Ok(None) => subscribable = false,
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to config changes; polling"),
            }
            // Anything committed before the subscription took effect.
            if let Err(e) = refresh(&state).await {
                tracing::warn!(error = %e, "refresh failed");
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = notified => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "change notifications lost; polling");
                    listener = None;
                }
            }
            () = tokio::time::sleep(state.settings.poll_interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = refresh(&state).await {
            state.metrics.store_error();
            tracing::debug!(error = %e, "refresh failed");
        }
        if last_keys.elapsed() >= state.settings.key_refresh {
            last_keys = std::time::Instant::now();
            // Keeps the cache when the store is down.
            if let Ok(keys) = state.store.active_keys().await {
                state.keys.replace_all(&keys);
            }
        }
    }
}

/// The control plane's router with its middleware.
pub fn router(state: AppState) -> Router {
    router_with(state, &[])
}

/// The control plane's router merged with the mounts' routes, with the
/// middleware around all of them; `/metrics` and the OpenAPI document
/// include the mounts'.
pub fn router_with(state: AppState, mounts: &[Arc<dyn Mount>]) -> Router {
    use api::{
        admin, alerts, experiments, guardrails, layers, lifecycle, power, registry, results,
    };
    // Handed to the two handlers that need them rather than layered onto
    // every request as an extension.
    let metrics_mounts = Mounted(mounts.to_vec().into());
    let openapi_mounts = metrics_mounts.clone();
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move |s: State<AppState>| prometheus(s, metrics_mounts)),
        );
    let control = Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || openapi_json(openapi_mounts)),
        )
        .route(
            "/api/v1/experiments",
            get(experiments::list).post(experiments::create),
        )
        .route(
            "/api/v1/experiments/{key}",
            get(experiments::get).put(experiments::update),
        )
        .route("/api/v1/experiments/{key}/audit", get(experiments::audit))
        .route("/api/v1/explain", post(experiments::explain))
        .route(
            "/api/v1/experiments/{key}/activation",
            get(experiments::activation),
        )
        .route(
            "/api/v1/experiments/{key}/results",
            get(results::latest).post(results::publish),
        )
        .route(
            "/api/v1/experiments/{key}/results/history",
            get(results::history),
        )
        .route("/api/v1/experiments/{key}/results/{seq}", get(results::one))
        .route(
            "/api/v1/experiments/{key}/guardrails",
            get(guardrails::view),
        )
        .route(
            "/api/v1/experiments/{key}/guardrails/{guardrail}/confirm",
            post(guardrails::confirm),
        )
        .route(
            "/api/v1/experiments/{key}/guardrails/{guardrail}/dismiss",
            post(guardrails::dismiss),
        )
        .route(
            "/api/v1/experiments/{key}/guardrails/evaluations/{id}/replay",
            post(guardrails::replay),
        )
        .route(
            "/api/v1/experiments/{key}/results/{seq}/retract",
            post(results::retract),
        )
        .route(
            "/api/v1/experiments/{key}/{action}",
            post(lifecycle::action),
        )
        .route("/api/v1/layers", get(layers::list).post(layers::create))
        .route("/api/v1/layers/{key}", get(layers::get))
        .route("/api/v1/layers/{key}/allocate", post(layers::allocate))
        .route("/api/v1/layers/{key}/dry-run", post(layers::dry_run))
        .route(
            "/api/v1/metrics",
            get(registry::list_metrics).post(registry::create_metric),
        )
        .route(
            "/api/v1/metrics/{key}",
            get(registry::get_metric)
                .put(registry::update_metric)
                .delete(registry::delete_metric),
        )
        .route(
            "/api/v1/guardrails",
            get(registry::list_guardrails).post(registry::create_guardrail),
        )
        .route(
            "/api/v1/guardrails/{key}",
            get(registry::get_guardrail).delete(registry::delete_guardrail),
        )
        .route(
            "/api/v1/bot-detection",
            get(registry::get_bot_detection).put(registry::put_bot_detection),
        )
        .route(
            "/api/v1/holdout",
            get(registry::get_holdout).put(registry::put_holdout),
        )
        .route("/api/v1/holdout/rotate", post(registry::rotate_holdout))
        .route("/api/v1/holdout/impact", get(registry::holdout_impact))
        .route(
            "/api/v1/key-metrics",
            get(registry::get_key_metrics).put(registry::put_key_metrics),
        )
        .route("/api/v1/power", post(power::plan))
        .route(
            "/api/v1/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/api/v1/keys/{id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route("/api/v1/audit", get(admin::audit))
        .route(
            "/api/v1/alerts/webhooks",
            get(alerts::list_webhooks).post(alerts::create_webhook),
        )
        .route(
            "/api/v1/alerts/webhooks/{id}",
            axum::routing::delete(alerts::delete_webhook),
        )
        .route("/api/v1/alerts/deliveries", get(alerts::deliveries))
        .route("/api/v1/config", get(admin::config_info))
        .route(
            "/api/v1/config/versions/{version}",
            get(admin::config_version),
        )
        .route("/api/v1/config/rollback", post(admin::rollback))
        .route("/sdk/v1/config", get(sdk::config))
        .route("/sdk/v1/stream", get(sdk::stream))
        .route("/sdk/v1/evaluate", post(sdk::evaluate))
        .route("/ofrep/v1/evaluate/flags", post(sdk::ofrep_bulk))
        .route("/ofrep/v1/evaluate/flags/{key}", post(sdk::ofrep_flag));
    // A node without the control role answers only its health, its
    // metrics and its mounts (`strata serve --role`).
    let routes = if state.settings.serve_control {
        base.merge(control)
    } else {
        base
    }
    .with_state(state.clone());
    let pages: Arc<[Arc<dyn Mount>]> = mounts.iter().cloned().collect();
    let routes = mounts
        .iter()
        .fold(routes, |r, m| r.merge(m.routes()))
        .fallback(move |req: axum::extract::Request| not_found(pages.clone(), req))
        .method_not_allowed_fallback(method_not_allowed);
    with_layers(routes, &state)
}

/// Body limit, panic catching and metrics around any router.
pub fn with_layers(routes: Router, state: &AppState) -> Router {
    routes
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
}

fn on_panic(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    AppError::internal("internal error").into_response()
}

/// Paths answered in JSON whatever the client accepts.
const API_PREFIXES: [&str; 6] = [
    "/api/",
    "/sdk/",
    "/ofrep/",
    "/collect/",
    "/metrics",
    "/healthz",
];

/// No route: a browser asking for a page gets a mount's page (the portal's),
/// everything else the API's JSON error.
async fn not_found(mounts: Arc<[Arc<dyn Mount>]>, req: axum::extract::Request) -> Response {
    let path = req.uri().path();
    let wants_html = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html && !API_PREFIXES.iter().any(|p| path.starts_with(p)) {
        if let Some(page) = mounts.iter().find_map(|m| m.page_not_found()) {
            return page;
        }
    }
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    state.store.ping().await.map_err(|e| state.store_error(e))?;
    Ok(Json(
        serde_json::json!({"status": "ready", "version": state.live.version()}),
    ))
}

/// The mounts, for the handlers that include theirs (`/metrics`, OpenAPI).
#[derive(Clone)]
struct Mounted(Arc<[Arc<dyn Mount>]>);

async fn prometheus(State(state): State<AppState>, Mounted(mounts): Mounted) -> Response {
    let mut text = state.metrics.render();
    let current = state.live.version();
    let reach = state.instances.reach(current, std::time::Instant::now());
    text.push_str(&format!(
        "# HELP strata_sdk_instances SDK instances that asked for the config in the last five minutes, and of them those on the current version.\n# TYPE strata_sdk_instances gauge\nstrata_sdk_instances{{version=\"any\"}} {}\nstrata_sdk_instances{{version=\"current\"}} {}\n",
        reach.instances, reach.applied
    ));
    for m in mounts.iter() {
        m.render_metrics(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi_json(Mounted(mounts): Mounted) -> Response {
    let extra = mounts.iter().filter_map(|m| m.openapi());
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(extra),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn state(dir: &std::path::Path) -> AppState {
        AppState {
            store: ConfigStore::open(&StoreOptions {
                data_dir: dir.to_path_buf(),
                database_url: None,
                max_connections: 2,
                snapshot_retention: 0,
            })
            .await
            .unwrap(),
            live: Arc::new(SharedConfig::new()),
            keys: Arc::new(KeyCache::default()),
            limiter: Arc::new(RateLimiter::new(0.0)),
            sdk_limiter: Arc::new(RateLimiter::new(0.0)),
            metrics: Arc::new(Metrics::default()),
            settings: Arc::new(Settings::default()),
            instances: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_format() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let routes: Router = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
        let app = with_layers(routes, &state);
        let resp = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        assert!(state
            .metrics
            .render()
            .contains("route=\"/boom\",status=\"500\""));
    }

    #[tokio::test]
    async fn the_router_answers_health_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        let resp = app
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
