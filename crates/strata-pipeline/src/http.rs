//! The ingestion endpoints: `POST /collect/v1/exposures` and
//! `POST /collect/v1/events`.
//!
//! One request goes through, in order: bearer authentication, the per-key
//! and per-source-IP limits (429 for the whole request), the body size limit
//! (413), backpressure (503 for a whole kind, or low-priority events shed one
//! by one), parsing and validation (per-record rejections), the per-unit
//! limit (per-record rejections), and [`Sink::append`]. The answer is sent
//! only once the sink has made the records durable, so a 200 means stored;
//! anything else means nothing of the request may be assumed stored, and a
//! retry is safe because the sink deduplicates.

mod collect;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::routing::post;
use axum::Router;

use crate::metrics::IngestMetrics;
use crate::parse::ParseLimits;
use crate::record::Kind;
use crate::{Authorizer, Catalog, Pressure, Sink};
use strata_http::limit::{Rate, RateLimiter};

/// When ingestion pushes back, as fractions of the sink's thresholds.
///
/// The load level is the largest of `backlog_bytes / max_backlog_bytes`,
/// `compaction_lag / max_compaction_lag` and `min_disk_free_bytes /
/// disk_free_bytes`. Exposures are the experiment denominator and are
/// refused last: low-priority event types go first, then all events, then
/// exposures (at level 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Backpressure {
    /// Compaction backlog at which the level reaches 1 (default 2 GiB).
    pub max_backlog_bytes: u64,
    /// Compaction lag at which the level reaches 1 (default 5 minutes, the
    /// design's consumer-lag signal).
    pub max_compaction_lag: Duration,
    /// Free disk at which the level reaches 1 (default 1 GiB).
    pub min_disk_free_bytes: u64,
    /// Level from which records of `low_priority_types` are shed (default
    /// 0.5).
    pub shed_low_priority_at: f64,
    /// Level from which all events are refused with 503 (default 0.8).
    pub shed_events_at: f64,
    /// Event types shed first (default `page_view`).
    pub low_priority_types: Vec<String>,
    /// `Retry-After` of a 503 (default 5 s).
    pub retry_after: Duration,
}

impl Default for Backpressure {
    fn default() -> Self {
        Self {
            max_backlog_bytes: 2 << 30,
            max_compaction_lag: Duration::from_secs(300),
            min_disk_free_bytes: 1 << 30,
            shed_low_priority_at: 0.5,
            shed_events_at: 0.8,
            low_priority_types: vec!["page_view".to_owned()],
            retry_after: Duration::from_secs(5),
        }
    }
}

impl Backpressure {
    /// The load level of `p`: 0 idle, 1 at a threshold.
    pub fn level(&self, p: &Pressure) -> f64 {
        let backlog = ratio(p.backlog_bytes as f64, self.max_backlog_bytes as f64);
        let lag = p.compaction_lag.map_or(0.0, |lag| {
            ratio(lag.as_secs_f64(), self.max_compaction_lag.as_secs_f64())
        });
        let disk = p.disk_free_bytes.map_or(0.0, |free| {
            if self.min_disk_free_bytes == 0 {
                0.0
            } else if free == 0 {
                f64::INFINITY
            } else {
                self.min_disk_free_bytes as f64 / free as f64
            }
        });
        backlog.max(lag).max(disk)
    }
}

fn ratio(value: f64, limit: f64) -> f64 {
    if limit <= 0.0 {
        0.0
    } else {
        value / limit
    }
}

/// Every limit of the ingestion endpoints. `Default` gives the documented
/// defaults (`docs/api.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Batch and record limits.
    pub parse: ParseLimits,
    /// Records per second per unit (default 100/s, burst 100); records over
    /// it are rejected one by one.
    pub unit_rate: Rate,
    /// Records per second per ingestion key (default 100,000/s); over it the
    /// whole request gets 429.
    pub key_rate: Rate,
    /// Records per second per source IP (default 10,000/s); over it the
    /// whole request gets 429. Needs the server to be run with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; without the
    /// peer address the limit is not applied.
    pub ip_rate: Rate,
    /// Units whose rate-limit state is kept (default 1,048,576, about
    /// 50 MiB at most); beyond it the per-unit limit forgets idle units
    /// early.
    pub unit_limiter_capacity: usize,
    /// Backpressure thresholds.
    pub backpressure: Backpressure,
    /// Most (experiment, variant) exposure series in `/metrics` (default
    /// 1,000).
    pub max_variant_series: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            parse: ParseLimits::default(),
            unit_rate: Rate::per_second(100.0),
            key_rate: Rate::per_second(100_000.0),
            ip_rate: Rate::per_second(10_000.0),
            unit_limiter_capacity: 1 << 20,
            backpressure: Backpressure::default(),
            max_variant_series: 1_000,
        }
    }
}

/// The ingestion endpoints over a [`Sink`] and an [`Authorizer`].
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    sink: Arc<dyn Sink>,
    auth: Arc<dyn Authorizer>,
    catalog: Option<Arc<dyn Catalog>>,
    cfg: IngestConfig,
    units: RateLimiter,
    keys: RateLimiter,
    ips: RateLimiter,
    metrics: IngestMetrics,
}

impl Ingest {
    /// Ingestion into `sink`, authenticated by `auth`, limited by `cfg`.
    pub fn new(sink: Arc<dyn Sink>, auth: Arc<dyn Authorizer>, cfg: IngestConfig) -> Ingest {
        Self::build(sink, auth, None, cfg)
    }

    /// Ingestion that also checks each exposure's experiment and variants
    /// against `catalog` (see [`crate::catalog`]).
    pub fn with_catalog(
        sink: Arc<dyn Sink>,
        auth: Arc<dyn Authorizer>,
        catalog: Arc<dyn Catalog>,
        cfg: IngestConfig,
    ) -> Ingest {
        Self::build(sink, auth, Some(catalog), cfg)
    }

    fn build(
        sink: Arc<dyn Sink>,
        auth: Arc<dyn Authorizer>,
        catalog: Option<Arc<dyn Catalog>>,
        cfg: IngestConfig,
    ) -> Ingest {
        let units = RateLimiter::new(cfg.unit_rate, cfg.unit_limiter_capacity);
        let keys = RateLimiter::new(cfg.key_rate, 65_536);
        let ips = RateLimiter::new(cfg.ip_rate, 65_536);
        let metrics = IngestMetrics::new(cfg.max_variant_series);
        Ingest {
            inner: Arc::new(Inner {
                sink,
                auth,
                catalog,
                cfg,
                units,
                keys,
                ips,
                metrics,
            }),
        }
    }

    /// The routes `/collect/v1/exposures`, `/collect/v1/events` and
    /// `/collect/v1/aliases`, with their state. Merge into the server's router; serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()` for the per-IP
    /// limit.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/collect/v1/exposures",
                post(|State(s): State<Arc<Inner>>, req: Request| async move {
                    s.collect(Kind::Exposure, req).await
                }),
            )
            .route(
                "/collect/v1/events",
                post(|State(s): State<Arc<Inner>>, req: Request| async move {
                    s.collect(Kind::Event, req).await
                }),
            )
            .route(
                "/collect/v1/aliases",
                post(|State(s): State<Arc<Inner>>, req: Request| async move {
                    s.collect(Kind::Alias, req).await
                }),
            )
            .with_state(self.inner.clone())
    }

    /// Appends the ingestion metrics and the sink's load figures as
    /// Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner
            .metrics
            .render(out, Some(self.inner.sink.pressure()));
    }
}
