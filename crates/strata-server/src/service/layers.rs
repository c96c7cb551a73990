//! Layers: creation, utilisation, allocation of free ranges and dry runs.
//!
//! A layer's 1000 buckets are shared by its experiments: a range is held by
//! a live experiment, and by an ended one until the cool-down has passed (so
//! its units are not handed to the next experiment while its effects may
//! linger). The range arithmetic here is also what experiment creation uses
//! to check overlaps and allocate `size`.

use std::time::Duration;

use serde::Serialize;
use strata_core::hash::BUCKETS;

use crate::auth::{random_hex, Perm};
use crate::model::{ExperimentRecord, LayerRecord, LayerRequest};
use crate::service::permissions::authorize;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{now_ms, parse_rfc3339, rfc3339, StoreError};

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

/// A layer with what its buckets are used for.
#[derive(Debug, Clone, Serialize)]
pub struct LayerView {
    /// The layer.
    #[serde(flatten)]
    pub layer: LayerRecord,
    /// The ranges held, in order.
    pub allocated: Vec<Allocation>,
    /// The free ranges, in order.
    pub free: Vec<[u16; 2]>,
    /// Free buckets.
    pub free_buckets: u32,
    /// Share of the buckets held.
    pub utilisation: f64,
}

/// Reads and changes layers.
#[derive(Debug, Clone)]
pub struct LayerService {
    state: AppState,
}

impl LayerService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// Creates a layer with a new salt (`layers:write`: admins); audited as
    /// `layer.create`.
    pub async fn create(
        &self,
        actor: &Actor,
        req: LayerRequest,
    ) -> Result<LayerRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::LayersWrite, None).await?;
        let model =
            |e: strata_model::ModelError| ServiceError::validation(e.field(), e.to_string());
        strata_model::check_key("key", &req.key).map_err(model)?;
        strata_model::check_text("description", &req.description, 10_000).map_err(model)?;
        let mut tx = self
            .state
            .store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))?;
        if tx.definition_key_taken("layer", &req.key).await? {
            return Err(ServiceError::AlreadyExists {
                what: "layer",
                key: req.key,
            });
        }
        let salt = random_hex(8).map_err(|e| ServiceError::Internal(e.message))?;
        let rec = LayerRecord {
            key: req.key,
            salt: format!("L-{salt}"),
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
        self.state
            .publish(tx, &format!("create layer {}", rec.key))
            .await?;
        Ok(rec)
    }

    async fn load(&self, key: &str) -> Result<LayerRecord, ServiceError> {
        self.state
            .store
            .definition("layer", key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::NotFound {
                what: "layer",
                key: key.to_owned(),
            })
    }

    /// The ranges held in layer `key` now.
    async fn taken(&self, key: &str) -> Result<Vec<Allocation>, ServiceError> {
        let exps = self
            .state
            .store
            .experiments_in_layer(key)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(occupied(
            &exps,
            now_ms(),
            self.state.settings.range_cooldown,
            None,
        ))
    }

    async fn view(&self, layer: LayerRecord) -> Result<LayerView, ServiceError> {
        let allocated = self.taken(&layer.key).await?;
        let free = free_ranges(&allocated);
        let free_buckets: u32 = free.iter().map(|[s, e]| u32::from(e - s)).sum();
        Ok(LayerView {
            layer,
            allocated,
            free,
            free_buckets,
            utilisation: f64::from(u32::from(BUCKETS) - free_buckets) / f64::from(BUCKETS),
        })
    }

    /// Every layer with its utilisation.
    pub async fn list(&self, actor: &Actor) -> Result<Vec<LayerView>, ServiceError> {
        let layers = self.records(actor).await?;
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            out.push(self.view(l).await?);
        }
        Ok(out)
    }

    /// Every layer's key, oldest first (cheaper than [`LayerService::list`],
    /// which reads each layer's experiments).
    pub async fn keys(&self, actor: &Actor) -> Result<Vec<String>, ServiceError> {
        let layers = self.records(actor).await?;
        Ok(layers.into_iter().map(|l| l.key).collect())
    }

    /// Every layer as stored, oldest first (`config:read`).
    async fn records(&self, actor: &Actor) -> Result<Vec<LayerRecord>, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.state
            .store
            .definitions("layer")
            .await
            .map_err(|e| self.store_error(e))
    }

    /// One layer with its utilisation.
    pub async fn get(&self, actor: &Actor, key: &str) -> Result<LayerView, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        let layer = self.load(key).await?;
        self.view(layer).await
    }

    /// The first free range of `size` buckets in layer `key` (first fit),
    /// for someone who may create experiments; nothing is reserved until an
    /// experiment is created with it.
    pub async fn allocate(
        &self,
        actor: &Actor,
        key: &str,
        size: i64,
    ) -> Result<[u16; 2], ServiceError> {
        authorize(&self.state.store, actor, Perm::ExperimentsWrite, None).await?;
        if !(1..=i64::from(BUCKETS)).contains(&size) {
            return Err(ServiceError::validation(
                "size",
                "size must be between 1 and 1000",
            ));
        }
        self.load(key).await?;
        let taken = self.taken(key).await?;
        let size = size as u16;
        find_free(&taken, size).ok_or_else(|| ServiceError::LayerFull {
            layer: key.to_owned(),
            size,
            free: free_ranges(&taken),
        })
    }

    /// The allocations a proposed `range` of layer `key` would overlap.
    pub async fn dry_run(
        &self,
        actor: &Actor,
        key: &str,
        range: [i64; 2],
    ) -> Result<Vec<Allocation>, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        let [s, e] = range;
        let buckets = i64::from(BUCKETS);
        if !(0..buckets).contains(&s) || !(1..=buckets).contains(&e) || s >= e {
            return Err(ServiceError::validation(
                "range",
                format!("range must satisfy 0 <= start < end <= 1000, got [{s}, {e}]"),
            ));
        }
        self.load(key).await?;
        let taken = self.taken(key).await?;
        Ok(overlapping(&taken, [s as u16, e as u16]))
    }
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
