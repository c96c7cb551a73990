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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{IngestMetrics, RefusalReason};
use crate::parse::{self, BatchError, BodyFormat, ParseLimits, Rejection};
use crate::record::{Kind, RecordRef};
use crate::{AuthDenied, Authorizer, Catalog, Outcome, Pressure, Sink, SinkError};
use strata_http::body::{discard_body, read_limited, BodyError};
use strata_http::limit::{Rate, RateLimiter, Verdict};
use strata_http::{retry_after_header, AppError};

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

    /// The routes `/collect/v1/exposures` and `/collect/v1/events`, with
    /// their state. Merge into the server's router; serve with
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

#[derive(Debug, Default, Deserialize)]
struct CollectQuery {
    #[serde(default)]
    all_or_nothing: bool,
}

/// The answer to a stored batch.
#[derive(Debug, serde::Serialize)]
struct BatchResponse {
    accepted: usize,
    duplicates: usize,
    rejected: Vec<Rejection>,
}

impl Inner {
    async fn collect(self: Arc<Self>, kind: Kind, req: Request) -> Response {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let resp = match self.collect_inner(kind, &parts, &mut body, started).await {
            Ok(resp) => resp,
            Err((reason, e)) => {
                // Refused before the body was read: drain it so that the
                // client sees this answer rather than a reset.
                if let Some(body) = body {
                    discard_body(&parts.headers, body, 0).await;
                }
                self.metrics.refused(reason);
                e.into_response()
            }
        };
        self.metrics.observe_latency(started.elapsed());
        resp
    }

    async fn collect_inner(
        &self,
        kind: Kind,
        parts: &axum::http::request::Parts,
        body: &mut Option<axum::body::Body>,
        started: Instant,
    ) -> Result<Response, (RefusalReason, AppError)> {
        let query = Query::<CollectQuery>::try_from_uri(&parts.uri).map_err(|e| {
            (
                RefusalReason::Malformed,
                AppError {
                    field: Some("all_or_nothing".into()),
                    ..AppError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("query string: {}", e.body_text().to_lowercase()),
                    )
                },
            )
        })?;
        let all_or_nothing = query.0.all_or_nothing;

        // Authentication first: an anonymous client learns nothing else.
        let token = bearer(&parts.headers).ok_or_else(|| {
            (
                RefusalReason::Auth,
                AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token in the authorization header",
                ),
            )
        })?;
        let principal = self.auth.authorize(token).await.map_err(|denied| {
            let e = match denied {
                AuthDenied::Unauthenticated => AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unknown or revoked token",
                ),
                AuthDenied::Forbidden(why) => AppError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this token may not ingest: {why}"),
                ),
            };
            (RefusalReason::Auth, e)
        })?;

        // Cheap checks before reading the body: a key or IP in debt is
        // refused without costing a parse.
        let key_hash = RateLimiter::key_hash(principal.key_id.as_bytes());
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip_hash = ip.map(ip_key);
        let now = Instant::now();
        check_rate(
            &self.keys,
            key_hash,
            now,
            RefusalReason::KeyRateLimit,
            "key",
        )?;
        if let Some(h) = ip_hash {
            check_rate(
                &self.ips,
                h,
                now,
                RefusalReason::IpRateLimit,
                "source address",
            )?;
        }

        let pressure = self.sink.pressure();
        let level = self.cfg.backpressure.level(&pressure);
        let refuse_kind = match kind {
            Kind::Exposure => level >= 1.0,
            Kind::Event => level >= self.cfg.backpressure.shed_events_at,
        };
        if refuse_kind {
            return Err((RefusalReason::Overloaded, self.overloaded(kind)));
        }

        // The body, bounded before and after decompression.
        let limit = self.cfg.parse.max_body_bytes;
        let body = body.take().unwrap_or_default();
        let bytes = read_limited(&parts.headers, body, limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { limit } => batch_error(BatchError::BodyTooLarge {
                    limit,
                    decompressed: false,
                }),
                e => (
                    RefusalReason::Malformed,
                    AppError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
                ),
            })?;
        let encoding = header_str(&parts.headers, header::CONTENT_ENCODING);
        let format =
            BodyFormat::from_content_type(header_str(&parts.headers, header::CONTENT_TYPE));
        let decoded = parse::decode_body(&bytes, encoding, limit).map_err(batch_error)?;
        let catalog = match (&self.catalog, kind) {
            (Some(c), Kind::Exposure) => c.current().await,
            _ => None,
        };
        let received_at = crate::record::now_micros();
        let batch = parse::parse_batch_in(
            &decoded,
            format,
            kind,
            received_at,
            &self.cfg.parse,
            catalog.as_deref(),
        )
        .map_err(batch_error)?;
        let total = batch.len();

        // Per-key and per-IP limits count records, taken as debt so that one
        // batch larger than a second's worth still passes.
        let now = Instant::now();
        take_rate(
            &self.keys,
            key_hash,
            total,
            now,
            RefusalReason::KeyRateLimit,
            "key",
        )?;
        if let Some(h) = ip_hash {
            take_rate(
                &self.ips,
                h,
                total,
                now,
                RefusalReason::IpRateLimit,
                "source address",
            )?;
        }

        let mut rejected = batch.rejected;
        let invalid = rejected.len();
        let mut keep = Vec::with_capacity(batch.indices.len());
        let mut exposures: Vec<(String, String)> = Vec::new();
        let mut shed = 0;
        let mut unit_limited = 0;
        let shed_low = kind == Kind::Event && level >= self.cfg.backpressure.shed_low_priority_at;
        // Only exposures (for the per-variant counts) and shedding need a
        // record's fields; the unit's hash was computed while parsing.
        let decode = kind == Kind::Exposure || shed_low;
        for (i, (&index, meta)) in batch.indices.iter().zip(batch.records.meta()).enumerate() {
            let record = match decode.then(|| batch.records.get(i)).flatten() {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    tracing::error!(index, error = %e, "a parsed record does not decode");
                    return Err((
                        RefusalReason::SinkError,
                        AppError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "storage",
                            "the batch could not be prepared for storage, nothing was stored",
                        ),
                    ));
                }
            };
            let kept = if shed_low && record.is_some_and(|r| self.is_low_priority(&r)) {
                shed += 1;
                rejected.push(Rejection {
                    retryable: true,
                    ..Rejection::new(index, "shed under load, retry later", Some("type"))
                });
                false
            } else if let Verdict::Deny(_) = self.units.take_exact(meta.unit_hash, 1.0, now) {
                unit_limited += 1;
                rejected.push(Rejection::new(
                    index,
                    format!(
                        "unit exceeds {} records per second",
                        self.cfg.unit_rate.per_second
                    ),
                    Some("unit_id"),
                ));
                false
            } else {
                true
            };
            if kept {
                if let Some(RecordRef::Exposure(x)) = record {
                    exposures.push((x.experiment.to_owned(), x.variant.to_owned()));
                }
            }
            keep.push(kept);
        }
        let records = if keep.iter().all(|&k| k) {
            batch.records
        } else {
            batch.records.select(|i| keep[i])
        };
        if shed > 0 && records.is_empty() && shed + unit_limited == total {
            // Everything valid was shed: tell the client to come back.
            self.metrics
                .batch(kind, 0, 0, invalid as u64, unit_limited as u64, shed as u64);
            return Err((RefusalReason::Overloaded, self.overloaded(kind)));
        }
        rejected.sort_by_key(|r| r.index);

        if all_or_nothing && !rejected.is_empty() {
            return Err((
                RefusalReason::AllOrNothing,
                AppError {
                    extra: Some(Box::new(json!({ "rejected": rejected }))),
                    field: rejected.first().and_then(|r| r.field.clone()),
                    ..AppError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "batch_rejected",
                        format!(
                            "{} of {total} records are invalid and all_or_nothing is set; nothing was stored",
                            rejected.len()
                        ),
                    )
                },
            ));
        }

        let (mut accepted, mut duplicates) = (0, 0);
        if !records.is_empty() {
            let n = records.len();
            let outcomes = self.sink.append(records).await.map_err(|e| match e {
                SinkError::Unavailable {
                    reason,
                    retry_after,
                } => (
                    RefusalReason::Overloaded,
                    AppError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("storage unavailable, nothing was stored: {reason}"),
                    )
                    .with_retry_after(retry_after),
                ),
                other => {
                    tracing::error!(error = %other, "ingestion sink failed");
                    (
                        RefusalReason::SinkError,
                        AppError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "storage",
                            format!("storing the batch failed, nothing was acknowledged: {other}"),
                        ),
                    )
                }
            })?;
            if outcomes.len() != n {
                tracing::error!(
                    expected = n,
                    got = outcomes.len(),
                    "sink returned a wrong number of outcomes"
                );
                return Err((
                    RefusalReason::SinkError,
                    AppError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "storage",
                        "storage returned an inconsistent answer",
                    ),
                ));
            }
            let mut fresh = Vec::new();
            for (i, o) in outcomes.iter().enumerate() {
                match o {
                    Outcome::Accepted => {
                        accepted += 1;
                        if let Some((e, v)) = exposures.get(i) {
                            fresh.push((e.as_str(), v.as_str()));
                        }
                    }
                    Outcome::Duplicate => duplicates += 1,
                }
            }
            if !fresh.is_empty() {
                self.metrics.exposures(fresh);
            }
        }
        self.metrics.batch(
            kind,
            accepted as u64,
            duplicates as u64,
            invalid as u64,
            unit_limited as u64,
            shed as u64,
        );
        tracing::debug!(?kind, accepted, duplicates, rejected = rejected.len(), elapsed = ?started.elapsed(), "batch stored");
        let mut resp = axum::Json(BatchResponse {
            accepted,
            duplicates,
            rejected,
        })
        .into_response();
        if shed > 0 {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_header(self.cfg.backpressure.retry_after),
            );
        }
        Ok(resp)
    }

    fn is_low_priority(&self, record: &RecordRef<'_>) -> bool {
        match record {
            RecordRef::Event(e) => self
                .cfg
                .backpressure
                .low_priority_types
                .iter()
                .any(|t| t == e.event_type),
            RecordRef::Exposure(_) => false,
        }
    }

    fn overloaded(&self, kind: Kind) -> AppError {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "ingestion of {} is paused while storage catches up, retry later",
                kind.dir_name()
            ),
        )
        .with_retry_after(self.cfg.backpressure.retry_after)
    }
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => RateLimiter::key_hash(&v4.octets()),
        IpAddr::V6(v6) => RateLimiter::key_hash(&v6.octets()),
    }
}

fn check_rate(
    limiter: &RateLimiter,
    key: u64,
    now: Instant,
    reason: RefusalReason,
    what: &str,
) -> Result<(), (RefusalReason, AppError)> {
    match limiter.check(key, now) {
        Verdict::Allow => Ok(()),
        Verdict::Deny(wait) => Err((reason, rate_limited(limiter, what, wait))),
    }
}

fn take_rate(
    limiter: &RateLimiter,
    key: u64,
    n: usize,
    now: Instant,
    reason: RefusalReason,
    what: &str,
) -> Result<(), (RefusalReason, AppError)> {
    match limiter.take_with_debt(key, n as f64, now) {
        Verdict::Allow => Ok(()),
        Verdict::Deny(wait) => Err((reason, rate_limited(limiter, what, wait))),
    }
}

fn rate_limited(limiter: &RateLimiter, what: &str, wait: Duration) -> AppError {
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this {what} exceeds {} records per second, nothing was stored",
            limiter.rate().per_second
        ),
    )
    .with_retry_after(wait)
}

fn batch_error(e: BatchError) -> (RefusalReason, AppError) {
    let (reason, status, code) = match &e {
        BatchError::BodyTooLarge { .. } => (
            RefusalReason::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        BatchError::TooManyRecords { .. } => (
            RefusalReason::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
        ),
        BatchError::UnsupportedEncoding(_) => (
            RefusalReason::Malformed,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        BatchError::Gzip(_) | BatchError::Json(_) | BatchError::Empty => (
            RefusalReason::Malformed,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    };
    (reason, AppError::new(status, code, e.to_string()))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, header::AUTHORIZATION)?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
