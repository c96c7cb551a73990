//! Shared state of the handlers and the commit path.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{KeyCache, RateLimiter};
use crate::error::AppError;
use crate::live::SharedConfig;
use crate::metrics::Metrics;
use crate::service::ServiceError;
use crate::store::{ConfigStore, StoreError, WriteTx};

/// Tunables of a running server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Ranges of ended experiments return to the pool after this long.
    pub range_cooldown: Duration,
    /// Requests per second per API token (0 = unlimited).
    pub rate_limit: f64,
    /// Requests per second per SDK or ingest token (0 = unlimited); one SDK
    /// key is typically shared by a whole fleet of processes.
    pub sdk_rate_limit: f64,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    /// How often to check the store for versions published by other instances.
    pub poll_interval: Duration,
    /// How often to reload the active keys (revocations made on other instances).
    pub key_refresh: Duration,
    /// A started or changed experiment counts as active after this long
    /// even if fewer than 95 % of the SDK instances have applied its
    /// version (see [`crate::activation`]).
    pub activation_timeout: Duration,
    /// Whether this node serves the control plane's API, the SDK
    /// distribution and OFREP (`strata serve --role control`); without,
    /// it answers only `/healthz`, `/readyz`, `/metrics` and its mounts.
    pub serve_control: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            range_cooldown: Duration::from_secs(7 * 24 * 3600),
            rate_limit: 100.0,
            sdk_rate_limit: 10_000.0,
            max_body_bytes: 1 << 20,
            keep_alive: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            key_refresh: Duration::from_secs(5),
            activation_timeout: Duration::from_secs(600),
            serve_control: true,
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The config store.
    pub store: ConfigStore,
    /// The served config.
    pub live: Arc<SharedConfig>,
    /// Known tokens.
    pub keys: Arc<KeyCache>,
    /// Per-token limits of API keys.
    pub limiter: Arc<RateLimiter>,
    /// Per-token limits of SDK and ingest keys.
    pub sdk_limiter: Arc<RateLimiter>,
    /// Prometheus counters.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub settings: Arc<Settings>,
    /// The SDK instances seen and the config version each holds.
    pub instances: Arc<crate::activation::Instances>,
}

impl AppState {
    /// Publishes the change's snapshot, commits, and swaps it in. Returns the version.
    pub async fn commit(&self, tx: WriteTx, reason: &str) -> Result<u64, AppError> {
        self.publish(tx, reason).await.map_err(AppError::from)
    }

    /// [`AppState::commit`] for the services: publishes the change's
    /// snapshot, commits, and swaps it in. Returns the version.
    pub async fn publish(&self, mut tx: WriteTx, reason: &str) -> Result<u64, ServiceError> {
        let count = |e| self.service_store_error(e);
        let live = tx
            .publish(reason)
            .await
            .map_err(count)?
            .map_err(ServiceError::InvalidSnapshot)?;
        let version = tx.version;
        tx.commit().await.map_err(count)?;
        self.live.install(live);
        self.metrics.set_config_version(self.live.version());
        Ok(version)
    }

    /// Commits a change whose snapshot was already stored, and swaps it in.
    pub async fn install(
        &self,
        tx: WriteTx,
        live: crate::live::LiveConfig,
    ) -> Result<u64, ServiceError> {
        let version = tx.version;
        tx.commit().await.map_err(|e| self.service_store_error(e))?;
        self.live.install(live);
        self.metrics.set_config_version(self.live.version());
        Ok(version)
    }

    /// Counts a store error of a service and wraps it.
    pub fn service_store_error(&self, e: StoreError) -> ServiceError {
        if matches!(e, StoreError::Unavailable(_)) {
            self.metrics.store_error();
        }
        ServiceError::Store(e)
    }

    /// Counts a store error and converts it.
    pub fn store_error(&self, e: crate::store::StoreError) -> AppError {
        if matches!(e, crate::store::StoreError::Unavailable(_)) {
            self.metrics.store_error();
        }
        AppError::from(e)
    }
}

/// 409: the change would make the snapshot invalid.
pub fn invalid_snapshot(e: strata_core::SnapshotError) -> AppError {
    AppError::new(
        axum::http::StatusCode::CONFLICT,
        "invalid_snapshot",
        format!("the change would publish an invalid snapshot: {e}"),
    )
    .with_extra(serde_json::json!({"kind": e.kind()}))
}
