//! Layers: creation, utilisation, allocation of free ranges and dry runs.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata_core::hash::BUCKETS;

use crate::auth::{random_hex, Auth, Perm};
use crate::error::AppError;
use crate::json::ApiJson;
use crate::model::{check_key, check_text, ExperimentRecord, LayerRecord, LayerRequest};
use crate::state::AppState;
use crate::store::{now_ms, parse_rfc3339, rfc3339};

/// A range held by an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Allocation {
    /// The experiment.
    pub experiment: String,
    /// Its range.
    pub range: [u16; 2],
    /// Its status.
    pub status: String,
    /// For ended experiments: when the range returns to the pool (RFC 3339).
    pub reserved_until: Option<String>,
}

/// The ranges held in a layer at `now`: live experiments' ranges, and ended
/// experiments' ranges until the cool-down has passed.
pub fn occupied(
    experiments: &[ExperimentRecord],
    now: i64,
    cooldown: Duration,
    exclude: Option<&str>,
) -> Vec<Allocation> {
    let cool = i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX);
    let mut out: Vec<Allocation> = experiments
        .iter()
        .filter(|e| Some(e.key.as_str()) != exclude)
        .filter_map(|e| {
            let range = e.range?;
            if e.status.is_live() {
                return Some(Allocation {
                    experiment: e.key.clone(),
                    range,
                    status: e.status.as_str().to_owned(),
                    reserved_until: None,
                });
            }
            let ended = e.ended_at.as_deref().and_then(parse_rfc3339).unwrap_or(0);
            let until = ended.saturating_add(cool);
            (until > now).then(|| Allocation {
                experiment: e.key.clone(),
                range,
                status: e.status.as_str().to_owned(),
                reserved_until: Some(rfc3339(until)),
            })
        })
        .collect();
    out.sort_by_key(|a| a.range);
    out
}

/// The allocations that overlap `range`.
pub fn overlapping(taken: &[Allocation], range: [u16; 2]) -> Vec<Allocation> {
    taken
        .iter()
        .filter(|a| a.range[0] < range[1] && range[0] < a.range[1])
        .cloned()
        .collect()
}

/// The free ranges of a layer, in order.
pub fn free_ranges(taken: &[Allocation]) -> Vec<[u16; 2]> {
    let mut ranges: Vec<[u16; 2]> = taken.iter().map(|a| a.range).collect();
    ranges.sort_unstable();
    let mut free = Vec::new();
    let mut cursor = 0u16;
    for [s, e] in ranges {
        if s > cursor {
            free.push([cursor, s]);
        }
        cursor = cursor.max(e);
    }
    if cursor < BUCKETS {
        free.push([cursor, BUCKETS]);
    }
    free
}

/// The first free range of `size` buckets (first fit).
pub fn find_free(taken: &[Allocation], size: u16) -> Option<[u16; 2]> {
    free_ranges(taken)
        .into_iter()
        .find(|[s, e]| e - s >= size)
        .map(|[s, _]| [s, s + size])
}

async fn utilisation(state: &AppState, layer: &LayerRecord) -> Result<Value, AppError> {
    let exps = state
        .store
        .experiments_in_layer(&layer.key)
        .await
        .map_err(|e| state.store_error(e))?;
    let taken = occupied(&exps, now_ms(), state.settings.range_cooldown, None);
    let free = free_ranges(&taken);
    let free_buckets: u32 = free.iter().map(|[s, e]| u32::from(e - s)).sum();
    let mut v = serde_json::to_value(layer).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("allocated".into(), json!(taken));
        o.insert("free".into(), json!(free));
        o.insert("free_buckets".into(), json!(free_buckets));
        o.insert(
            "utilisation".into(),
            json!(f64::from(1000 - free_buckets) / 1000.0),
        );
    }
    Ok(v)
}

/// `POST /api/v1/layers` (admin)
#[utoipa::path(post, path = "/api/v1/layers", tag = "layers", request_body = LayerRequest,
    responses((status = 201, body = LayerRecord), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<LayerRequest>,
) -> Result<impl IntoResponse, AppError> {
    auth.require(&state, Perm::LayersWrite).await?;
    check_key("key", &req.key)?;
    check_text("description", &req.description, 10_000)?;
    let mut tx = state
        .store
        .begin_write(&auth.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    if tx.definition_key_taken("layer", &req.key).await? {
        return Err(AppError::already_exists("layer", &req.key));
    }
    let rec = LayerRecord {
        key: req.key.clone(),
        salt: format!("L-{}", random_hex(8)?),
        description: req.description,
        revision: 1,
        created_at: rfc3339(tx.now),
    };
    tx.put_definition("layer", &rec.key, &rec, 1, false).await?;
    tx.audit(
        "layer.create",
        "layer",
        &rec.key,
        None,
        serde_json::to_value(&rec).ok().as_ref(),
        None,
    )
    .await?;
    state
        .commit(tx, &format!("create layer {}", rec.key))
        .await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// `GET /api/v1/layers`
#[utoipa::path(get, path = "/api/v1/layers", tag = "layers",
    responses((status = 200, description = "{items: [layer with allocated, free, free_buckets, utilisation]}")))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::Read).await?;
    let layers: Vec<LayerRecord> = state
        .store
        .definitions("layer")
        .await
        .map_err(|e| state.store_error(e))?;
    let mut items = Vec::with_capacity(layers.len());
    for l in &layers {
        items.push(utilisation(&state, l).await?);
    }
    Ok(Json(json!({ "items": items })))
}

async fn load(state: &AppState, key: &str) -> Result<LayerRecord, AppError> {
    state
        .store
        .definition("layer", key)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| AppError::not_found("layer", key))
}

/// `GET /api/v1/layers/{key}`
#[utoipa::path(get, path = "/api/v1/layers/{key}", tag = "layers", params(("key" = String, Path)),
    responses((status = 200, description = "the layer with allocated, free, free_buckets, utilisation"), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::Read).await?;
    let layer = load(&state, &key).await?;
    Ok(Json(utilisation(&state, &layer).await?))
}

/// The body of `POST /api/v1/layers/{key}/allocate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateRequest {
    /// Buckets wanted (1–1000).
    pub size: i64,
}

/// `POST /api/v1/layers/{key}/allocate`: finds a free range (first fit); the
/// range is reserved when an experiment is created with it.
#[utoipa::path(post, path = "/api/v1/layers/{key}/allocate", tag = "layers", params(("key" = String, Path)),
    request_body = AllocateRequest, responses((status = 200, description = "{layer, range}"), (status = 409, description = "no free range")))]
pub async fn allocate(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<AllocateRequest>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::ExperimentsWrite).await?;
    if !(1..=i64::from(BUCKETS)).contains(&req.size) {
        return Err(AppError::validation(
            "size",
            "size must be between 1 and 1000",
        ));
    }
    load(&state, &key).await?;
    let exps = state
        .store
        .experiments_in_layer(&key)
        .await
        .map_err(|e| state.store_error(e))?;
    let taken = occupied(&exps, now_ms(), state.settings.range_cooldown, None);
    let size = req.size as u16;
    let range = find_free(&taken, size).ok_or_else(|| {
        AppError::new(
            StatusCode::CONFLICT,
            "layer_full",
            format!("layer {key:?} has no free range of size {size}"),
        )
        .with_field("size")
        .with_extra(json!({"free": free_ranges(&taken)}))
    })?;
    Ok(Json(json!({"layer": key, "range": range})))
}

/// The body of `POST /api/v1/layers/{key}/dry-run`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// Proposed `[start, end)`.
    pub range: [i64; 2],
}

/// `POST /api/v1/layers/{key}/dry-run`: which experiments a proposed range would overlap.
#[utoipa::path(post, path = "/api/v1/layers/{key}/dry-run", tag = "layers", params(("key" = String, Path)),
    request_body = DryRunRequest, responses((status = 200, description = "{layer, range, ok, overlaps}")))]
pub async fn dry_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<DryRunRequest>,
) -> Result<Json<Value>, AppError> {
    auth.require(&state, Perm::Read).await?;
    let [s, e] = req.range;
    if !(0..1000).contains(&s) || !(1..=1000).contains(&e) || s >= e {
        return Err(AppError::validation(
            "range",
            format!("range must satisfy 0 <= start < end <= 1000, got [{s}, {e}]"),
        ));
    }
    load(&state, &key).await?;
    let exps = state
        .store
        .experiments_in_layer(&key)
        .await
        .map_err(|e| state.store_error(e))?;
    let taken = occupied(&exps, now_ms(), state.settings.range_cooldown, None);
    let overlaps = overlapping(&taken, [s as u16, e as u16]);
    Ok(Json(json!({
        "layer": key,
        "range": [s, e],
        "ok": overlaps.is_empty(),
        "overlaps": overlaps,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(s: u16, e: u16) -> Allocation {
        Allocation {
            experiment: format!("e{s}"),
            range: [s, e],
            status: "running".into(),
            reserved_until: None,
        }
    }

    #[test]
    fn free_ranges_and_first_fit() {
        let taken = vec![alloc(0, 100), alloc(300, 400), alloc(350, 500)];
        assert_eq!(free_ranges(&taken), vec![[100, 300], [500, 1000]]);
        assert_eq!(find_free(&taken, 200), Some([100, 300]));
        assert_eq!(find_free(&taken, 201), Some([500, 701]));
        assert_eq!(find_free(&taken, 501), None);
        assert_eq!(free_ranges(&[]), vec![[0, 1000]]);
        assert_eq!(overlapping(&taken, [99, 101]).len(), 1);
        assert!(overlapping(&taken, [100, 300]).is_empty());
    }
}
