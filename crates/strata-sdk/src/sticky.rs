//! Sticky assignments in the SDK (assignment spec, section 9).
//!
//! A sticky experiment keeps what it assigned a unit, across targeting,
//! ramp and weight changes and across sign-in. The evaluator is pure: it
//! reads kept assignments from a lookup and returns new ones. The SDK's
//! lookup is a bounded in-process cache, read under a lock held only while
//! evaluating in memory, so `variant()` never waits on the network. Behind
//! the cache is a [`StickyStore`] shared by every instance of the
//! application: [`MemoryStickyStore`] by default (one process), or
//! [`RedisStickyStore`] (feature `redis`, on by default).
//!
//! - New entries go into the cache at once and to the store in the
//!   background; a store write inserts only where nothing is kept, so the
//!   first assignment of a unit wins across instances.
//! - [`crate::Client::load_sticky`] copies the kept assignments of a
//!   context's units from the store into the cache: call it when a session
//!   starts (the async edge of a request), before evaluating. An evaluation
//!   of a unit not in the cache assigns it afresh by hash.
//! - [`crate::Client::identify`] moves an anonymous id's kept assignments
//!   to the user id it signed in as, in the cache and in the store.
//! - Failing open: a store that errors or times out is counted
//!   ([`crate::Stats::sticky_store_failures`]) and the evaluation goes on as
//!   for a non-sticky experiment where nothing is cached.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError, RwLock};

pub use strata_core::StickyAssignment;
use strata_core::StickyLookup;

/// A boxed future, so that [`StickyStore`] is a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sticky store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StickyStoreError {
    /// The store could not be reached or answered with an error.
    #[error("sticky store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something that is not a sticky assignment.
    #[error("sticky store holds an unreadable entry: {0}")]
    Corrupt(String),
}

/// Where sticky assignments are kept between processes.
pub trait StickyStore: Send + Sync + 'static {
    /// The assignments kept for the given units (attribute, id).
    fn load<'a>(
        &'a self,
        units: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<StickyAssignment>, StickyStoreError>>;

    /// Keeps `entries` where nothing is kept yet for the same unit and
    /// experiment (what was kept first wins).
    fn save<'a>(
        &'a self,
        entries: &'a [StickyAssignment],
    ) -> BoxFuture<'a, Result<(), StickyStoreError>>;
}

/// Kept assignments by unit: attribute → id → experiment → variant, so
/// that a lookup borrows its keys and allocates nothing.
type UnitMap = HashMap<String, HashMap<String, HashMap<String, String>>>;

fn unit<'m>(map: &'m UnitMap, attr: &str, id: &str) -> Option<&'m HashMap<String, String>> {
    map.get(attr)?.get(id)
}

fn unit_mut<'m>(map: &'m mut UnitMap, attr: &str, id: &str) -> &'m mut HashMap<String, String> {
    map.entry(attr.to_owned())
        .or_default()
        .entry(id.to_owned())
        .or_default()
}

fn remove_unit(map: &mut UnitMap, attr: &str, id: &str) {
    if let Some(ids) = map.get_mut(attr) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(attr);
        }
    }
}

fn insert_absent(map: &mut UnitMap, a: &StickyAssignment) -> bool {
    let unit = unit_mut(map, &a.unit_attr, &a.unit_id);
    if unit.contains_key(&a.experiment) {
        return false;
    }
    unit.insert(a.experiment.clone(), a.variant.clone());
    true
}

/// The default store: kept in this process's memory, unbounded, lost on
/// restart. Share one between clients with `Arc` if several run in one
/// process.
#[derive(Debug, Default)]
pub struct MemoryStickyStore {
    units: Mutex<UnitMap>,
}

impl MemoryStickyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StickyStore for MemoryStickyStore {
    fn load<'a>(
        &'a self,
        units: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<StickyAssignment>, StickyStoreError>> {
        let map = self.units.lock().unwrap_or_else(PoisonError::into_inner);
        let out = units
            .iter()
            .filter_map(|u| Some((u, unit(&map, &u.0, &u.1)?)))
            .flat_map(|((attr, id), exps)| {
                exps.iter().map(|(e, v)| StickyAssignment {
                    unit_attr: attr.clone(),
                    unit_id: id.clone(),
                    experiment: e.clone(),
                    variant: v.clone(),
                })
            })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn save<'a>(
        &'a self,
        entries: &'a [StickyAssignment],
    ) -> BoxFuture<'a, Result<(), StickyStoreError>> {
        let mut map = self.units.lock().unwrap_or_else(PoisonError::into_inner);
        for e in entries {
            insert_absent(&mut map, e);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The client's cache of kept assignments: bounded by units, the oldest
/// unit cached first is forgotten first (the store still has it).
pub(crate) struct Cache {
    inner: RwLock<CacheInner>,
    capacity: usize,
}

#[derive(Default)]
struct CacheInner {
    units: UnitMap,
    order: VecDeque<(String, String)>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: RwLock::new(CacheInner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Runs `f` with the cache as a [`StickyLookup`].
    pub fn with_lookup<R>(&self, f: impl FnOnce(&dyn StickyLookup) -> R) -> R {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(&*inner)
    }

    /// Caches `entries` where nothing is cached for their unit and
    /// experiment; returns how many were new.
    pub fn insert(&self, entries: &[StickyAssignment]) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut added = 0;
        for e in entries {
            if unit(&inner.units, &e.unit_attr, &e.unit_id).is_none() {
                inner
                    .order
                    .push_back((e.unit_attr.clone(), e.unit_id.clone()));
            }
            added += usize::from(insert_absent(&mut inner.units, e));
        }
        inner.evict(self.capacity);
        added
    }

    /// Caches `entries`, replacing what is cached for their unit and
    /// experiment (what the store holds is the truth).
    pub fn replace(&self, entries: &[StickyAssignment]) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for e in entries {
            if unit(&inner.units, &e.unit_attr, &e.unit_id).is_none() {
                inner
                    .order
                    .push_back((e.unit_attr.clone(), e.unit_id.clone()));
            }
            unit_mut(&mut inner.units, &e.unit_attr, &e.unit_id)
                .insert(e.experiment.clone(), e.variant.clone());
        }
        inner.evict(self.capacity);
    }

    /// The cached assignments of one unit, as entries.
    pub fn unit(&self, attr: &str, id: &str) -> Vec<StickyAssignment> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        unit(&inner.units, attr, id)
            .into_iter()
            .flatten()
            .map(|(e, v)| StickyAssignment {
                unit_attr: attr.to_owned(),
                unit_id: id.to_owned(),
                experiment: e.clone(),
                variant: v.clone(),
            })
            .collect()
    }

    /// Units cached now.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }
}

impl CacheInner {
    /// Forgets the oldest units cached beyond `capacity`.
    fn evict(&mut self, capacity: usize) {
        while self.order.len() > capacity {
            if let Some((attr, id)) = self.order.pop_front() {
                remove_unit(&mut self.units, &attr, &id);
            }
        }
    }
}

impl StickyLookup for CacheInner {
    fn kept(&self, unit_attr: &str, unit_id: &str, experiment: &str) -> Option<&str> {
        unit(&self.units, unit_attr, unit_id)?
            .get(experiment)
            .map(String::as_str)
    }
}

/// The entries of `from`'s unit moved to the unit `to`: what
/// `identify(anonymous_id, user_id)` keeps for the user.
pub(crate) fn moved(entries: &[StickyAssignment], to: (&str, &str)) -> Vec<StickyAssignment> {
    entries
        .iter()
        .map(|e| StickyAssignment {
            unit_attr: to.0.to_owned(),
            unit_id: to.1.to_owned(),
            experiment: e.experiment.clone(),
            variant: e.variant.clone(),
        })
        .collect()
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisStickyStore;

#[cfg(feature = "redis")]
mod redis_store {
    use std::time::Duration;

    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    use super::{BoxFuture, StickyAssignment, StickyStore, StickyStoreError};

    /// Sticky assignments in Redis, shared by every instance of the
    /// application: one hash per unit, `{prefix}{len}:{attribute}:{id}`, whose
    /// fields are experiment keys and values variants (`HSETNX`, so the
    /// first assignment wins), with an optional expiry refreshed on write.
    #[derive(Clone)]
    pub struct RedisStickyStore {
        conn: ConnectionManager,
        prefix: String,
        ttl: Option<Duration>,
    }

    fn unavailable(e: redis::RedisError) -> StickyStoreError {
        StickyStoreError::Unavailable(e.to_string())
    }

    impl RedisStickyStore {
        /// Connects to `url` (`redis://host:port/db`); keys start with
        /// `prefix` (e.g. `strata:sticky:`). The connection reconnects by
        /// itself; each operation gives up after a second, so a slow Redis
        /// is a counted failure, not a stalled client.
        pub async fn connect(url: &str, prefix: &str) -> Result<Self, StickyStoreError> {
            let client = redis::Client::open(url).map_err(unavailable)?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(2)
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            let conn = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(unavailable)?;
            Ok(Self {
                conn,
                prefix: prefix.to_owned(),
                ttl: None,
            })
        }

        /// Forget a unit's assignments this long after its last new one
        /// (default: never).
        pub fn with_ttl(mut self, ttl: Duration) -> Self {
            self.ttl = Some(ttl);
            self
        }

        fn key(&self, attr: &str, id: &str) -> String {
            // The attribute's length first, so that no two (attribute, id)
            // pairs share a key whatever characters they contain.
            format!("{}{}:{attr}:{id}", self.prefix, attr.len())
        }
    }

    impl StickyStore for RedisStickyStore {
        fn load<'a>(
            &'a self,
            units: &'a [(String, String)],
        ) -> BoxFuture<'a, Result<Vec<StickyAssignment>, StickyStoreError>> {
            Box::pin(async move {
                let mut pipe = redis::pipe();
                for (attr, id) in units {
                    pipe.hgetall(self.key(attr, id));
                }
                let mut conn = self.conn.clone();
                let maps: Vec<Vec<(String, String)>> =
                    pipe.query_async(&mut conn).await.map_err(unavailable)?;
                Ok(units
                    .iter()
                    .zip(maps)
                    .flat_map(|((attr, id), fields)| {
                        fields.into_iter().map(|(e, v)| StickyAssignment {
                            unit_attr: attr.clone(),
                            unit_id: id.clone(),
                            experiment: e,
                            variant: v,
                        })
                    })
                    .collect())
            })
        }

        fn save<'a>(
            &'a self,
            entries: &'a [StickyAssignment],
        ) -> BoxFuture<'a, Result<(), StickyStoreError>> {
            Box::pin(async move {
                if entries.is_empty() {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                for e in entries {
                    let key = self.key(&e.unit_attr, &e.unit_id);
                    pipe.hset_nx(&key, &e.experiment, &e.variant).ignore();
                    if let Some(ttl) = self.ttl {
                        pipe.expire(&key, ttl.as_secs().max(1) as i64).ignore();
                    }
                }
                let mut conn = self.conn.clone();
                pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attr: &str, id: &str, exp: &str, v: &str) -> StickyAssignment {
        StickyAssignment {
            unit_attr: attr.into(),
            unit_id: id.into(),
            experiment: exp.into(),
            variant: v.into(),
        }
    }

    #[test]
    fn the_cache_keeps_the_first_assignment_and_forgets_the_oldest_unit() {
        let cache = Cache::new(2);
        assert_eq!(cache.insert(&[entry("user_id", "a", "x", "control")]), 1);
        assert_eq!(cache.insert(&[entry("user_id", "a", "x", "treatment")]), 0);
        cache.with_lookup(|l| assert_eq!(l.kept("user_id", "a", "x"), Some("control")));
        cache.insert(&[
            entry("user_id", "b", "x", "t"),
            entry("device_id", "a", "x", "t"),
        ]);
        assert_eq!(cache.len(), 2);
        cache.with_lookup(|l| {
            assert_eq!(
                l.kept("user_id", "a", "x"),
                None,
                "the oldest unit goes first"
            );
            assert_eq!(
                l.kept("device_id", "a", "x"),
                Some("t"),
                "attributes keep units apart"
            );
        });
    }

    #[tokio::test]
    async fn the_memory_store_loads_what_it_kept_first() {
        let store = MemoryStickyStore::new();
        store
            .save(&[
                entry("user_id", "a", "x", "control"),
                entry("user_id", "a", "x", "t"),
            ])
            .await
            .unwrap();
        let got = store
            .load(&[
                ("user_id".into(), "a".into()),
                ("user_id".into(), "b".into()),
            ])
            .await
            .unwrap();
        assert_eq!(got, vec![entry("user_id", "a", "x", "control")]);
    }
}
