//! Exposure deduplication per (unit, experiment) per UTC day, without locks.
//!
//! A page loaded ten times is one exposure: the analysis counts units, not
//! page views, and the collector deduplicates by (unit, experiment, UTC day)
//! anyway, so sending the other nine would only cost bandwidth. A [`Dedup`]
//! takes no lock and allocates nothing: a fixed table of 64-bit slots,
//! grouped in buckets of two cache lines, read and claimed with atomic
//! operations.
//!
//! The client keeps two. A small one (512 KiB, cache-resident) answers on
//! the caller's thread of every `variant()` call, so that a repeat costs a
//! hash and a cached read; a pair it does not know is handed to the
//! background, where the day's full table (16 MiB for a million pairs,
//! far larger than the caches: a miss costs a trip to memory) decides. A
//! pair the small table has forgotten is only handed over again, never
//! sent twice.
//!
//! A slot holds the day's low 16 bits and 48 bits of a hash of the pair.
//! Slots of another day count as free, so the table starts afresh each UTC
//! day without being cleared. A full bucket overwrites one of its slots:
//! the worst outcome of that is a repeated exposure, which the collector
//! drops. The opposite error, a pair taken for one already seen, needs a
//! collision of the stored bits within one bucket (at the default size the
//! bucket index and the stored bits overlap by 1 of 48, so about 16 in 2^47
//! per new pair) and would lose that exposure: at a billion new pairs a
//! day, about once in 9,000 days.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per bucket: 16 × 8 bytes, two adjacent cache lines (fetched
/// together by the adjacent-line prefetcher). At most half full on average,
/// a bucket of 16 overflows about once per 10,000 buckets; a bucket of 8
/// overflowed often enough to repeat 0.3 % of exposures.
const BUCKET_SLOTS: usize = 16;
/// Bits of the slot holding the hash; the top 16 hold the day.
const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

/// The hash of a (unit, experiment) pair, computed once per exposure.
pub(crate) fn pair_hash(unit: &str, experiment: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    unit.hash(&mut h);
    experiment.hash(&mut h);
    h.finish()
}

#[repr(align(128))]
#[derive(Default)]
struct Bucket([AtomicU64; BUCKET_SLOTS]);

/// The set of (unit, experiment) pairs already exposed today.
pub(crate) struct Dedup {
    buckets: Box<[Bucket]>,
    /// 64 minus log2 of the bucket count: the bucket is the hash's top bits.
    shift: u32,
}

impl Dedup {
    /// A table for about `capacity` pairs a day, at most half full: 16 bytes
    /// per pair (16 MiB for the default million).
    pub fn new(capacity: usize) -> Self {
        let buckets = (capacity.max(1) * 2)
            .div_ceil(BUCKET_SLOTS)
            .next_power_of_two();
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            shift: 64 - buckets.trailing_zeros(),
        }
    }

    /// Whether this is the first time the pair of `hash` (see
    /// [`pair_hash`]) is seen on `day` (days since the Unix epoch, UTC);
    /// records it.
    pub fn first_today(&self, hash: u64, day: u64) -> bool {
        let tag = (day & 0xffff) << HASH_BITS;
        // Never 0, which marks an empty slot (of day 0 in the tag bits).
        let want = tag | (hash & HASH_MASK).max(1);
        // The bucket comes from the hash's top bits and the slot keeps its
        // low 48, so the pairs of one bucket share few of the stored bits.
        let index = hash.checked_shr(self.shift).unwrap_or(0) as usize;
        let Some(bucket) = self.buckets.get(index) else {
            return true;
        };
        let slots = &bucket.0;
        if slots.iter().any(|s| s.load(Ordering::Relaxed) == want) {
            return false;
        }
        for slot in slots {
            let cur = slot.load(Ordering::Relaxed);
            if cur == want {
                return false; // another thread recorded it just now
            }
            if cur & !HASH_MASK == tag && cur != 0 {
                continue; // another pair of today
            }
            match slot.compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                // Another thread recorded the same pair just now.
                Err(now) if now == want => return false,
                Err(_) => {}
            }
        }
        // A full bucket: overwrite one slot (a repeated exposure at worst).
        if let Some(slot) = slots.get((hash as usize) % BUCKET_SLOTS) {
            slot.store(want, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exposure_per_unit_experiment_and_day() {
        let d = Dedup::new(1000);
        assert!(d.first_today(pair_hash("u1", "e1"), 10));
        assert!(!d.first_today(pair_hash("u1", "e1"), 10));
        assert!(d.first_today(pair_hash("u1", "e2"), 10));
        assert!(d.first_today(pair_hash("u2", "e1"), 10));
        // A new day starts afresh.
        assert!(d.first_today(pair_hash("u1", "e1"), 11));
        assert!(!d.first_today(pair_hash("u1", "e1"), 11));
        // Day 0 works too (its tag bits are zero).
        assert!(d.first_today(pair_hash("u1", "e1"), 0));
        assert!(!d.first_today(pair_hash("u1", "e1"), 0));
    }

    #[test]
    fn the_pair_is_not_ambiguous() {
        let d = Dedup::new(1000);
        assert!(d.first_today(pair_hash("ab", "c"), 1));
        assert!(d.first_today(pair_hash("a", "bc"), 1));
    }

    #[test]
    fn within_capacity_every_pair_is_remembered() {
        let d = Dedup::new(100_000);
        for i in 0..100_000 {
            assert!(d.first_today(pair_hash(&format!("u{i}"), "e"), 7), "u{i}");
        }
        let forgotten = (0..100_000)
            .filter(|i| d.first_today(pair_hash(&format!("u{i}"), "e"), 7))
            .count();
        // Under half full; a bucket of 16 overflows only rarely.
        assert!(forgotten < 20, "{forgotten} pairs forgotten");
    }

    #[test]
    fn a_new_day_reuses_the_slots_of_the_old_one() {
        let d = Dedup::new(64);
        assert_eq!(d.buckets.len(), 8);
        for i in 0..10_000 {
            d.first_today(pair_hash(&format!("u{i}"), "e"), 1);
        }
        // The table is full of day 1; day 2 takes those slots back rather
        // than evicting its own pairs.
        for i in 0..64 {
            assert!(d.first_today(pair_hash(&format!("v{i}"), "e"), 2));
        }
        let forgotten = (0..64)
            .filter(|i| d.first_today(pair_hash(&format!("v{i}"), "e"), 2))
            .count();
        assert!(forgotten < 4, "{forgotten} pairs forgotten");
    }

    #[test]
    fn concurrent_callers_record_each_pair_once() {
        let d = std::sync::Arc::new(Dedup::new(10_000));
        let firsts: usize = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    (0..5_000)
                        .filter(|i| d.first_today(pair_hash(&format!("u{i}"), "e"), 3))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(firsts, 5_000);
    }
}
