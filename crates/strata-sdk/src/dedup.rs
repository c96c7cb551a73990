//! Exposure deduplication per (unit, experiment) per process-day.
//!
//! A page loaded ten times is one exposure: the analysis counts units, not
//! page views, and the collector deduplicates by (unit, experiment, UTC day)
//! anyway, so sending the other nine would only cost bandwidth. The set keeps
//! 64-bit hashes of the pair, split over shards so that concurrent callers
//! rarely meet on one lock, and starts afresh on each UTC day. A shard that
//! reaches its bound is cleared rather than grown: the worst outcome is a
//! repeated exposure, which the collector drops.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;

const SHARDS: usize = 64;

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    day: u64,
    seen: HashSet<u64, BuildHasherDefault<Identity>>,
}

/// The set of (unit, experiment) pairs already exposed today.
pub(crate) struct Dedup {
    shards: Vec<Mutex<Shard>>,
    max_per_shard: usize,
}

impl Dedup {
    /// A set remembering about `capacity` pairs a day.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Whether this is the first exposure of `unit` to `experiment` on
    /// `day` (days since the Unix epoch, UTC); records it.
    pub fn first_today(&self, unit: &str, experiment: &str, day: u64) -> bool {
        let mut h = std::hash::DefaultHasher::new();
        unit.hash(&mut h);
        experiment.hash(&mut h);
        let key = h.finish();
        // The shard comes from middle bits: the set's table uses the low
        // bits for the position and the top 7 for its control bytes, which
        // must stay uniformly distributed within a shard.
        let Some(shard) = self.shards.get((key >> 32) as usize % SHARDS) else {
            return true;
        };
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if shard.day != day {
            shard.day = day;
            shard.seen.clear();
        }
        if shard.seen.len() >= self.max_per_shard {
            shard.seen.clear();
        }
        shard.seen.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exposure_per_unit_experiment_and_day() {
        let d = Dedup::new(1000);
        assert!(d.first_today("u1", "e1", 10));
        assert!(!d.first_today("u1", "e1", 10));
        assert!(d.first_today("u1", "e2", 10));
        assert!(d.first_today("u2", "e1", 10));
        // A new day starts afresh.
        assert!(d.first_today("u1", "e1", 11));
        assert!(!d.first_today("u1", "e1", 11));
    }

    #[test]
    fn the_pair_is_not_ambiguous() {
        let d = Dedup::new(1000);
        assert!(d.first_today("ab", "c", 1));
        assert!(d.first_today("a", "bc", 1));
    }

    #[test]
    fn a_full_shard_is_cleared_not_grown() {
        let d = Dedup::new(SHARDS * 4);
        for i in 0..10_000 {
            d.first_today(&format!("u{i}"), "e", 1);
        }
        for s in &d.shards {
            assert!(s.lock().unwrap().seen.len() <= 4);
        }
    }
}
