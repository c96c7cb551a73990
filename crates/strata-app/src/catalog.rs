//! The experiments exposures may name, read from the control plane's store.
//!
//! The collection endpoints refuse exposures to experiments that never
//! started and to variants they do not have (strata-pipeline's `catalog`).
//! This implementation keeps the list in memory and reloads it from the
//! store when the served config version moved: every start, edit or end of
//! an experiment publishes a new version, so a version check per batch is
//! enough to be current, and the reload happens before the batch is checked
//! (an SDK that already has the new config cannot outrun it).
//!
//! The reserved experiment of holdout exposures (`$holdout`, variants
//! `holdout` and `rest`; assignment spec section 11) is always in the list:
//! a unit's membership of the global holdout is data whether or not a
//! holdout is set now.

use std::sync::{Arc, PoisonError, RwLock};

use strata_pipeline::{BoxFuture, Catalog, CatalogEntry, Experiments};
use strata_server::AppState;

/// [`Catalog`] over the control plane's experiments.
#[derive(Debug)]
pub struct StoreCatalog {
    state: AppState,
    /// The list and the config version it was read at.
    loaded: RwLock<Option<(u64, Arc<Experiments>)>>,
    /// One reload at a time; batches arriving meanwhile wait for it.
    reload: tokio::sync::Mutex<()>,
}

impl StoreCatalog {
    /// A catalog over `state`'s store, loaded on first use.
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
            loaded: RwLock::new(None),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, version: u64) -> Option<Arc<Experiments>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        loaded
            .as_ref()
            .filter(|(v, _)| *v >= version)
            .map(|(_, e)| e.clone())
    }

    fn stale(&self) -> Option<Arc<Experiments>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        loaded.as_ref().map(|(_, e)| e.clone())
    }

    async fn load(&self) -> Option<Arc<Experiments>> {
        let version = self.state.live.version();
        if let Some(e) = self.cached(version) {
            return Some(e);
        }
        let _one = self.reload.lock().await;
        // Another batch may have reloaded while this one waited.
        if let Some(e) = self.cached(version) {
            return Some(e);
        }
        match self.state.store.experiments().await {
            Ok(all) => {
                let entries = all
                    .into_iter()
                    // Started at some point: drafts and experiments waiting
                    // for approval never served anyone.
                    .filter(|e| e.started_at.is_some() || e.status.is_started())
                    .map(|e| CatalogEntry {
                        variants: e.variants.iter().map(|v| v.key.clone()).collect(),
                        key: e.key,
                        flag: e.flag,
                    })
                    .chain(std::iter::once(holdout_entry()));
                let experiments = Arc::new(Experiments::new(entries));
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                    Some((version, experiments.clone()));
                Some(experiments)
            }
            Err(e) => {
                // Refusing exposures because the control plane's store is
                // down would lose data: the last list (or none: unchecked)
                // is used until it answers again.
                tracing::warn!(error = %e, "cannot reload the experiments exposures are checked against; using the last list");
                self.stale()
            }
        }
    }
}

/// The reserved experiment of holdout exposures.
fn holdout_entry() -> CatalogEntry {
    CatalogEntry {
        key: strata_core::HOLDOUT_EXPERIMENT.to_owned(),
        flag: strata_core::HOLDOUT_EXPERIMENT.to_owned(),
        variants: vec![
            strata_core::HOLDOUT_VARIANT.to_owned(),
            strata_core::REST_VARIANT.to_owned(),
        ],
    }
}

impl Catalog for StoreCatalog {
    fn current(&self) -> BoxFuture<'_, Option<Arc<Experiments>>> {
        Box::pin(self.load())
    }
}
