//! SDK-facing endpoints: the snapshot (pull, with ETag/304), the stream of new
//! versions (Server-Sent Events), remote evaluation and OFREP.
//!
//! All of them read the in-memory [`crate::live::LiveConfig`]: they never
//! re-parse or re-compile the snapshot. Evaluation is strata-core's; nothing
//! here decides an assignment by itself. Remote evaluation of a snapshot
//! with running sticky experiments also reads and keeps the sticky
//! assignments of the context's units in the store ([`remote_evaluate`]);
//! when the store is down it evaluates without them (counted), so every
//! endpoint keeps answering.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use strata_core::{Assignment, Context, StickyMap};

use crate::auth::{Auth, Perm};
use crate::error::AppError;
use crate::json::{parse, ApiBody, ApiJson};
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Whether an `If-None-Match` header matches `etag`.
fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == bare)
}

/// The header SDKs name their instance in (see [`crate::activation`]).
pub const INSTANCE_HEADER: &str = "x-strata-instance";

fn not_modified(etag: HeaderValue) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    r.headers_mut().insert(header::ETAG, etag);
    r
}

/// `GET /sdk/v1/config`: the current snapshot; `ETag` is the version.
#[utoipa::path(get, path = "/sdk/v1/config", tag = "sdk",
    responses((status = 200, description = "the snapshot (docs/snapshot.schema.json)"), (status = 304), (status = 401)))]
pub async fn config(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    auth.require(&state, Perm::SdkRead).await?;
    let live = state.live.load();
    // The instance holds the version it is answered with: the one it
    // already has (304) or the current one (200).
    if let Some(id) = headers.get(INSTANCE_HEADER).and_then(|v| v.to_str().ok()) {
        state
            .instances
            .seen(id, live.version, std::time::Instant::now());
    }
    if etag_matches(&headers, live.etag.to_str().unwrap_or("")) {
        return Ok(not_modified(live.etag.clone()));
    }
    let mut r = Response::new(Body::from(live.body.clone()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, live.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// Counts a connected stream for as long as it lives.
struct StreamGuard(Arc<Metrics>);

impl StreamGuard {
    fn new(m: Arc<Metrics>) -> Self {
        m.sse_delta(1);
        Self(m)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.sse_delta(-1);
    }
}

fn version_event(v: u64) -> Event {
    Event::default()
        .event("config")
        .id(v.to_string())
        .data(format!("{{\"version\":{v}}}"))
}

/// `GET /sdk/v1/stream`: Server-Sent Events. On connect an event `config`
/// with the current version, then one per new version, plus keep-alive comments.
#[utoipa::path(get, path = "/sdk/v1/stream", tag = "sdk",
    responses((status = 200, description = "text/event-stream of `event: config` / `data: {\"version\": N}`")))]
pub async fn stream(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    auth.require(&state, Perm::SdkRead).await?;
    let mut rx = state.live.subscribe();
    let first = *rx.borrow_and_update();
    let guard = StreamGuard::new(state.metrics.clone());
    let s = futures_util::stream::unfold(
        (rx, Some(first), guard),
        |(mut rx, first, guard)| async move {
            if let Some(v) = first {
                return Some((Ok(version_event(v)), (rx, None, guard)));
            }
            rx.changed().await.ok()?;
            let v = *rx.borrow_and_update();
            Some((Ok(version_event(v)), (rx, None, guard)))
        },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(state.settings.keep_alive)))
}

/// The body of `POST /sdk/v1/evaluate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// Attributes: unit ids (`user_id`, …), targeting attributes, `opted_out`.
    #[schema(value_type = Object)]
    pub context: Value,
    /// The surface; absent means every surface.
    #[serde(default)]
    pub surface: Option<String>,
}

/// One assignment as answered to remote clients (keyed by the opaque flag).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RemoteAssignment<'a> {
    /// Opaque flag key.
    pub flag: &'a str,
    /// Variant to serve.
    pub variant: &'a str,
    /// Variant assigned (differs for opted-out units).
    pub assigned: &'a str,
    /// Whether to log an exposure.
    pub log_exposure: bool,
}

/// A holdout exposure as answered to remote clients (assignment spec
/// section 11): the client logs it as an exposure of experiment
/// `$holdout`, once per unit and day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RemoteHoldout<'a> {
    /// The context attribute that identified the unit.
    pub unit_attr: &'a str,
    /// The unit id.
    pub unit_id: String,
    /// `holdout` or `rest`.
    pub variant: &'static str,
}

/// Evaluates `ctx` for a remote client: strata-core's evaluation, with the
/// sticky assignments kept for the context's units when the snapshot has
/// running sticky experiments (assignment spec, section 9), keeping the
/// entries the evaluation returns. Fails open: a store error evaluates
/// without stickiness and is counted (`strata_sticky_failures_total`).
/// A known bot's evaluation is counted (`strata_bot_evaluations_total`).
async fn remote_evaluate<'a>(
    state: &AppState,
    live: &'a LiveConfig,
    ctx: &Context,
    surface: Option<&str>,
) -> Vec<Assignment<'a>> {
    if live.compiled.excludes_bots() && strata_core::bots::is_bot(ctx) {
        state.metrics.bot_evaluation();
    }
    let units: Vec<(String, String)> = live
        .sticky_attrs
        .iter()
        .filter_map(|a| Some((a.clone(), strata_core::unit_text(ctx.get(a)?)?.into_owned())))
        .collect();
    if units.is_empty() {
        return live.compiled.evaluate(ctx, surface);
    }
    let kept = match state.store.sticky_assignments(&units).await {
        Ok(kept) => kept,
        Err(e) => {
            state.metrics.sticky_failure();
            tracing::warn!(error = %e, "sticky assignments unavailable; evaluating without them");
            return live.compiled.evaluate(ctx, surface);
        }
    };
    let mut map = StickyMap::new();
    for k in kept {
        map.insert(k);
    }
    let evaluation = live.compiled.evaluate_sticky(ctx, surface, &map);
    if !evaluation.new_entries.is_empty() {
        let entries: Vec<_> = evaluation
            .new_entries
            .iter()
            .map(|e| e.to_owned())
            .collect();
        if let Err(e) = state.store.keep_sticky_assignments(&entries).await {
            state.metrics.sticky_failure();
            tracing::warn!(error = %e, "sticky assignments not kept");
        }
    }
    evaluation.assignments
}

fn context_from(value: Value, field: &str) -> Result<Context, AppError> {
    Context::try_from(value).map_err(|e| AppError::validation(field, format!("{field}: {e}")))
}

/// `POST /sdk/v1/evaluate`: the assignments of strata-core for a context,
/// and, with a global holdout, the context's holdout exposures to log.
#[utoipa::path(post, path = "/sdk/v1/evaluate", tag = "sdk", request_body = EvaluateRequest,
    responses((status = 200, description = "{version, assignments: [RemoteAssignment], holdout?: [RemoteHoldout]}")))]
pub async fn evaluate(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<EvaluateRequest>,
) -> Result<Response, AppError> {
    auth.require(&state, Perm::SdkRead).await?;
    let ctx = context_from(req.context, "context")?;
    let live = state.live.load();
    let assignments: Vec<RemoteAssignment<'_>> =
        remote_evaluate(&state, &live, &ctx, req.surface.as_deref())
            .await
            .into_iter()
            .map(|a| RemoteAssignment {
                flag: a.flag,
                variant: a.variant,
                assigned: a.assigned,
                log_exposure: a.log_exposure,
            })
            .collect();
    let holdout: Vec<RemoteHoldout<'_>> = live
        .compiled
        .holdout_exposures(&ctx, req.surface.as_deref())
        .into_iter()
        .map(|h| RemoteHoldout {
            variant: h.variant(),
            unit_attr: h.unit_attr,
            unit_id: h.unit_id,
        })
        .collect();
    #[derive(Serialize)]
    struct Out<'a> {
        version: u64,
        assignments: Vec<RemoteAssignment<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        holdout: Vec<RemoteHoldout<'a>>,
    }
    let body = serde_json::to_vec(&Out {
        version: live.version,
        assignments,
        holdout,
    })
    .map_err(|e| AppError::internal(e.to_string()))?;
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

// ---------------------------------------------------------------------------
// OFREP

fn ofrep_error(
    status: StatusCode,
    key: Option<&str>,
    code: &str,
    details: impl Into<String>,
) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details.into()});
    if let (Some(k), Some(o)) = (key, body.as_object_mut()) {
        o.insert("key".into(), json!(k));
    }
    (status, axum::Json(body)).into_response()
}

/// Parses an OFREP request body into its context attributes.
fn ofrep_context(body: &[u8], key: Option<&str>) -> Result<Map<String, Value>, Box<Response>> {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        context: Option<Value>,
    }
    let req: Req = parse(body).map_err(|e| {
        Box::new(ofrep_error(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            e.message,
        ))
    })?;
    match req.context {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(Box::new(ofrep_error(
            StatusCode::BAD_REQUEST,
            key,
            "INVALID_CONTEXT",
            "context must be a json object",
        ))),
        None => Err(Box::new(ofrep_error(
            StatusCode::BAD_REQUEST,
            key,
            "INVALID_CONTEXT",
            "context is required",
        ))),
    }
}

/// Puts `targetingKey` under `unit` unless the context already has it; false
/// when neither is present.
fn fill_unit(ctx: &mut Map<String, Value>, unit: &str) -> bool {
    if ctx.get(unit).is_some_and(|v| !v.is_null()) {
        return true;
    }
    match ctx.get("targetingKey") {
        Some(Value::String(t)) if !t.is_empty() => {
            let t = t.clone();
            ctx.insert(unit.to_owned(), Value::String(t));
            true
        }
        _ => false,
    }
}

fn flag_result(
    live: &LiveConfig,
    flag: &str,
    assigned: Option<&strata_core::Assignment<'_>>,
) -> Value {
    let info = live.flags.get(flag);
    let (value, reason, mut meta) = match (assigned, info) {
        (Some(a), Some(i)) => (
            a.variant.to_owned(),
            if i.rollout {
                "TARGETING_MATCH"
            } else {
                "SPLIT"
            },
            json!({"assigned": a.assigned, "log_exposure": a.log_exposure}),
        ),
        (Some(a), None) => (a.variant.to_owned(), "SPLIT", json!({})),
        (None, Some(i)) if i.disabled.is_some() => (
            i.control.clone(),
            "DISABLED",
            json!({"status": i.disabled.clone().unwrap_or_default()}),
        ),
        (None, Some(i)) => (i.control.clone(), "DEFAULT", json!({})),
        (None, None) => (String::new(), "DEFAULT", json!({})),
    };
    if let Some(o) = meta.as_object_mut() {
        o.insert("version".into(), json!(live.version));
    }
    json!({"key": flag, "value": value, "variant": value, "reason": reason, "metadata": meta})
}

/// `POST /ofrep/v1/evaluate/flags/{key}`: OpenFeature remote evaluation of
/// one flag (the experiment's opaque `flag`).
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "ofrep", params(("key" = String, Path)),
    request_body(content = Object, description = "{\"context\": {\"targetingKey\": UNIT, ...}}"),
    responses((status = 200, description = "{key, value, variant, reason, metadata}"),
        (status = 400, description = "INVALID_CONTEXT, TARGETING_KEY_MISSING, PARSE_ERROR"),
        (status = 404, description = "FLAG_NOT_FOUND")))]
pub async fn ofrep_flag(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiBody(body): ApiBody,
) -> Result<Response, AppError> {
    auth.require(&state, Perm::SdkRead).await?;
    let mut ctx = match ofrep_context(&body, Some(&key)) {
        Ok(c) => c,
        Err(r) => return Ok(*r),
    };
    let live = state.live.load();
    let Some(info) = live.flags.get(&key) else {
        return Ok(ofrep_error(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            format!("flag {key:?} is not in config version {}", live.version),
        ));
    };
    if info.disabled.is_some() {
        return Ok(axum::Json(flag_result(&live, &key, None)).into_response());
    }
    if !fill_unit(&mut ctx, &info.unit) {
        return Ok(ofrep_error(
            StatusCode::BAD_REQUEST,
            Some(&key),
            "TARGETING_KEY_MISSING",
            format!("context needs targetingKey (or {})", info.unit),
        ));
    }
    let ctx = Context::from(ctx);
    let results = remote_evaluate(&state, &live, &ctx, None).await;
    let a = results.iter().find(|a| a.flag == key);
    let mut out = flag_result(&live, &key, a);
    if let Some(meta) = out["metadata"].as_object_mut() {
        meta.extend(holdout_metadata(&live, &ctx));
    }
    Ok(axum::Json(out).into_response())
}

/// The context's holdout exposures (assignment spec section 11) as OFREP
/// metadata, whose values are flat: `"holdout:ATTR": "holdout" | "rest"`
/// per unit attribute; the unit id is the context's value of `ATTR`. The
/// client logs each as an exposure of experiment `$holdout`, once per unit
/// and day.
fn holdout_metadata(live: &LiveConfig, ctx: &Context) -> Map<String, Value> {
    live.compiled
        .holdout_exposures(ctx, None)
        .into_iter()
        .map(|h| (format!("holdout:{}", h.unit_attr), json!(h.variant())))
        .collect()
}

/// `POST /ofrep/v1/evaluate/flags`: bulk evaluation of every flag, with an
/// `ETag` (config version + request) and `If-None-Match` → 304.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep",
    request_body(content = Object, description = "{\"context\": {\"targetingKey\": UNIT, ...}}"),
    responses((status = 200, description = "{flags: [...]}"), (status = 304), (status = 400)))]
pub async fn ofrep_bulk(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, AppError> {
    auth.require(&state, Perm::SdkRead).await?;
    let mut ctx = match ofrep_context(&body, None) {
        Ok(c) => c,
        Err(r) => return Ok(*r),
    };
    let live = state.live.load();
    let digest = Sha256::digest(&body);
    let etag_text = format!(
        "\"{}-{}\"",
        live.version,
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let etag =
        HeaderValue::from_str(&etag_text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    if etag_matches(&headers, &etag_text) {
        return Ok(not_modified(etag));
    }
    let mut any_unit = live.unit_attrs.is_empty();
    for u in &live.unit_attrs {
        any_unit |= fill_unit(&mut ctx, u);
    }
    if !any_unit {
        return Ok(ofrep_error(
            StatusCode::BAD_REQUEST,
            None,
            "TARGETING_KEY_MISSING",
            "context needs targetingKey (or a unit attribute)",
        ));
    }
    let ctx = Context::from(ctx);
    let results = remote_evaluate(&state, &live, &ctx, None).await;
    let mut keys: Vec<&String> = live.flags.keys().collect();
    keys.sort();
    let flags: Vec<Value> = keys
        .into_iter()
        .map(|k| flag_result(&live, k, results.iter().find(|a| a.flag == k.as_str())))
        .collect();
    let mut meta = holdout_metadata(&live, &ctx);
    meta.insert("version".into(), json!(live.version));
    let mut r = axum::Json(json!({"flags": flags, "metadata": meta})).into_response();
    r.headers_mut().insert(header::ETAG, etag);
    Ok(r)
}
