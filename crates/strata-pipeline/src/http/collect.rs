//! One request to `POST /collect/v1/exposures|events`, as a sequence of
//! stages.
//!
//! Each stage either hands the next one what it needs or refuses the whole
//! request with a [`Refusal`]: the metrics reason and the error answer.
//! Refusals come as early and as cheaply as possible: authentication first,
//! so an anonymous client learns nothing else; then the per-key and
//! per-source-IP limits and backpressure, before a byte of the body is
//! read; then the body size, before and after decompression. A refusal
//! before the body is read drains it, so that the client sees the answer
//! rather than a reset.
//!
//! Past parsing, problems of single records (invalid, over the per-unit
//! limit, shed under load) become per-record rejections, and the rest of
//! the batch goes on. The answer is built only after [`crate::Sink::append`]
//! returned, so a 200 means stored; any refusal means nothing of the
//! request may be assumed stored, and a retry is safe because the sink
//! deduplicates.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Inner;
use crate::metrics::RefusalReason;
use crate::parse::{self, BatchError, BodyFormat, ParsedBatch, Rejection};
use crate::record::{Kind, RecordRef};
use crate::{AuthDenied, Batch, Outcome, Principal, SinkError};
use strata_http::body::{discard_body, read_limited, BodyError};
use strata_http::limit::{RateLimiter, Verdict};
use strata_http::{retry_after_header, AppError};

/// Why a request was refused as a whole, and the answer to it.
type Refusal = (RefusalReason, AppError);

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

/// Who is sending, as the per-key and per-source-IP limits know them.
struct Client {
    key_hash: u64,
    /// `None` when the server runs without the peer address.
    ip_hash: Option<u64>,
}

/// The valid records of a batch after the per-record limits, and how the
/// others fared.
struct Screened {
    /// Rejected records, in batch order.
    rejected: Vec<Rejection>,
    /// (experiment, variant) of each kept record, for exposures.
    exposures: Vec<(String, String)>,
    /// Records in the batch, valid or not.
    total: usize,
    invalid: usize,
    shed: usize,
    unit_limited: usize,
}

/// What the sink did with the kept records.
#[derive(Default)]
struct Stored {
    accepted: usize,
    duplicates: usize,
}

impl Inner {
    /// The handler of both routes: runs the stages, and answers and counts
    /// a refusal.
    pub(super) async fn collect(self: Arc<Self>, kind: Kind, req: Request) -> Response {
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

    /// The stages, in order.
    async fn collect_inner(
        &self,
        kind: Kind,
        parts: &Parts,
        body: &mut Option<axum::body::Body>,
        started: Instant,
    ) -> Result<Response, Refusal> {
        let all_or_nothing = all_or_nothing(parts)?;
        let principal = self.authenticate(parts).await?;
        let client = self.check_rates(&principal, parts)?;
        let level = self.check_pressure(kind)?;

        let raw = self.read_body(parts, body).await?;
        let (decoded, format) = self.decode(parts, &raw)?;
        let batch = self.parse(kind, &decoded, format).await?;

        // The per-key, per-IP and per-unit limits count the records at one
        // instant.
        let now = Instant::now();
        self.charge(&client, batch.len(), now)?;
        let (records, screened) = self.screen(kind, batch, level, now)?;
        if all_or_nothing {
            check_all_or_nothing(&screened)?;
        }

        let stored = self.append(records, &screened.exposures).await?;
        Ok(self.answer(kind, screened, stored, started))
    }

    /// The bearer token's principal.
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, Refusal> {
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
        self.auth.authorize(token).await.map_err(|denied| {
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
        })
    }

    /// Refuses a key or source IP already in debt, without costing a parse;
    /// the records themselves are charged by [`charge`](Self::charge).
    fn check_rates(&self, principal: &Principal, parts: &Parts) -> Result<Client, Refusal> {
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
        Ok(Client { key_hash, ip_hash })
    }

    /// The sink's load level; refuses the whole kind past its threshold
    /// (exposures, the experiment denominator, and aliases, which join a
    /// unit's records, last).
    fn check_pressure(&self, kind: Kind) -> Result<f64, Refusal> {
        let pressure = self.sink.pressure();
        let level = self.cfg.backpressure.level(&pressure);
        let refuse_kind = match kind {
            Kind::Exposure | Kind::Alias => level >= 1.0,
            Kind::Event => level >= self.cfg.backpressure.shed_events_at,
        };
        if refuse_kind {
            return Err((RefusalReason::Overloaded, self.overloaded(kind)));
        }
        Ok(level)
    }

    /// The body as sent, bounded by the body size limit. Takes the body out
    /// of `body`: from here on a refusal has nothing left to drain.
    async fn read_body(
        &self,
        parts: &Parts,
        body: &mut Option<axum::body::Body>,
    ) -> Result<Vec<u8>, Refusal> {
        let limit = self.cfg.parse.max_body_bytes;
        let body = body.take().unwrap_or_default();
        read_limited(&parts.headers, body, limit)
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
            })
    }

    /// The body decompressed (bounded by the same limit) and its format.
    fn decode<'a>(
        &self,
        parts: &Parts,
        raw: &'a [u8],
    ) -> Result<(Cow<'a, [u8]>, BodyFormat), Refusal> {
        let limit = self.cfg.parse.max_body_bytes;
        let encoding = header_str(&parts.headers, header::CONTENT_ENCODING);
        let format =
            BodyFormat::from_content_type(header_str(&parts.headers, header::CONTENT_TYPE));
        let decoded = parse::decode_body(raw, encoding, limit).map_err(batch_error)?;
        Ok((decoded, format))
    }

    /// The records, validated (against the catalog for exposures, when
    /// there is one) and encoded as log frames, stamped with the time of
    /// receipt.
    async fn parse(
        &self,
        kind: Kind,
        decoded: &[u8],
        format: BodyFormat,
    ) -> Result<ParsedBatch, Refusal> {
        let catalog = match (&self.catalog, kind) {
            (Some(c), Kind::Exposure) => c.current().await,
            _ => None,
        };
        let received_at = crate::record::now_micros();
        parse::parse_batch_in(
            decoded,
            format,
            kind,
            received_at,
            &self.cfg.parse,
            catalog.as_deref(),
        )
        .map_err(batch_error)
    }

    /// Charges the batch's records to the key's and the IP's limits, as
    /// debt so that one batch larger than a second's worth still passes.
    fn charge(&self, client: &Client, records: usize, now: Instant) -> Result<(), Refusal> {
        take_rate(
            &self.keys,
            client.key_hash,
            records,
            now,
            RefusalReason::KeyRateLimit,
            "key",
        )?;
        if let Some(h) = client.ip_hash {
            take_rate(
                &self.ips,
                h,
                records,
                now,
                RefusalReason::IpRateLimit,
                "source address",
            )?;
        }
        Ok(())
    }

    /// Applies the per-record limits: sheds low-priority events under load
    /// and rejects records of units over their rate. Returns the records
    /// kept; refuses the request when load shed every valid record, so the
    /// client comes back rather than drops them.
    fn screen(
        &self,
        kind: Kind,
        batch: ParsedBatch,
        level: f64,
        now: Instant,
    ) -> Result<(Batch, Screened), Refusal> {
        let total = batch.len();
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
        let screened = Screened {
            rejected,
            exposures,
            total,
            invalid,
            shed,
            unit_limited,
        };
        Ok((records, screened))
    }

    /// Makes `records` durable. Counts the exposures the sink accepted
    /// (`exposures` is one entry per exposure record, in order) per variant.
    async fn append(
        &self,
        records: Batch,
        exposures: &[(String, String)],
    ) -> Result<Stored, Refusal> {
        let mut stored = Stored::default();
        if records.is_empty() {
            return Ok(stored);
        }
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
                    stored.accepted += 1;
                    if let Some((e, v)) = exposures.get(i) {
                        fresh.push((e.as_str(), v.as_str()));
                    }
                }
                Outcome::Duplicate => stored.duplicates += 1,
            }
        }
        if !fresh.is_empty() {
            self.metrics.exposures(fresh);
        }
        Ok(stored)
    }

    /// Counts the batch and answers with what became of each record; a
    /// batch that had records shed carries `Retry-After`.
    fn answer(&self, kind: Kind, screened: Screened, stored: Stored, started: Instant) -> Response {
        let Stored {
            accepted,
            duplicates,
        } = stored;
        let Screened {
            rejected,
            invalid,
            shed,
            unit_limited,
            ..
        } = screened;
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
        resp
    }

    fn is_low_priority(&self, record: &RecordRef<'_>) -> bool {
        match record {
            RecordRef::Event(e) => self
                .cfg
                .backpressure
                .low_priority_types
                .iter()
                .any(|t| t == e.event_type),
            RecordRef::Exposure(_) | RecordRef::Alias(_) => false,
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

/// The `all_or_nothing` query parameter.
fn all_or_nothing(parts: &Parts) -> Result<bool, Refusal> {
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
    Ok(query.0.all_or_nothing)
}

/// Refuses an all-or-nothing batch with any rejected record; nothing of it
/// is stored.
fn check_all_or_nothing(screened: &Screened) -> Result<(), Refusal> {
    let rejected = &screened.rejected;
    if rejected.is_empty() {
        return Ok(());
    }
    Err((
        RefusalReason::AllOrNothing,
        AppError {
            extra: Some(Box::new(json!({ "rejected": rejected }))),
            field: rejected.first().and_then(|r| r.field.clone()),
            ..AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "batch_rejected",
                format!(
                    "{} of {} records are invalid and all_or_nothing is set; nothing was stored",
                    rejected.len(),
                    screened.total
                ),
            )
        },
    ))
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
) -> Result<(), Refusal> {
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
) -> Result<(), Refusal> {
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

fn batch_error(e: BatchError) -> Refusal {
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
