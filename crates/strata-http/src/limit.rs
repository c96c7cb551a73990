//! Abuse control: token-bucket rate limits per key (a unit, a token, a source
//! IP), in bounded memory.
//!
//! A limiter keeps one bucket per key, identified by a 64-bit hash of the key
//! (xxh3) so that a flood of long unit ids costs 24 bytes per entry, not the
//! ids themselves. The map is split in two generations: entries live in the
//! current generation, and when it has existed for a full refill period or
//! holds its share of the capacity it becomes the previous one and the old
//! previous generation is dropped. A bucket untouched for a whole refill
//! period is full again, so forgetting it changes nothing; if a flood of
//! distinct keys forces an early rotation, the limit becomes more permissive
//! for a moment instead of memory growing without bound.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a limiter answers one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Allowed; the tokens are taken.
    Allow,
    /// Refused; retry after this long.
    Deny(Duration),
}

/// A rate: `per_second` tokens refill every second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens (records) per second; 0 disables the limit.
    pub per_second: f64,
    /// Largest number of tokens a bucket holds.
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst of one second's worth.
    pub fn per_second(per_second: f64) -> Self {
        Self {
            per_second,
            burst: per_second,
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::per_second(0.0)
    }

    /// Whether the limit is off.
    pub fn is_unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The keys are already hashes; hashing them again would be wasted work.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, Bucket, BuildHasherDefault<IdentityHasher>>;

struct Shard {
    current: Map,
    previous: Map,
    rotated_at: Instant,
}

const SHARDS: usize = 16;

/// Token buckets per key, bounded in memory.
pub struct RateLimiter {
    rate: Rate,
    shard_capacity: usize,
    period: Duration,
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("capacity", &(self.shard_capacity * SHARDS))
            .finish()
    }
}

impl RateLimiter {
    /// A limiter of `rate` per key remembering at most about `capacity` keys
    /// (twice that across both generations).
    pub fn new(rate: Rate, capacity: usize) -> Self {
        let now = Instant::now();
        let refill = if rate.is_unlimited() {
            1.0
        } else {
            (rate.burst / rate.per_second).clamp(0.001, 3600.0)
        };
        Self {
            rate,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            period: Duration::from_secs_f64(refill),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: Map::default(),
                        previous: Map::default(),
                        rotated_at: now,
                    })
                })
                .collect(),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The hash identifying `key`.
    pub fn key_hash(key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(key)
    }

    /// Takes `n` tokens from `key`'s bucket if it holds them all; otherwise
    /// takes none and says when they will be there.
    pub fn take_exact(&self, key: u64, n: f64, now: Instant) -> Verdict {
        self.with_bucket(key, now, |rate, b| {
            if b.tokens >= n {
                b.tokens -= n;
                Verdict::Allow
            } else {
                Verdict::Deny(Duration::from_secs_f64(
                    ((n - b.tokens) / rate.per_second).min(3600.0),
                ))
            }
        })
    }

    /// Takes `n` tokens from `key`'s bucket as long as it is not in debt,
    /// letting it go negative: one large batch passes, and the key then
    /// waits until the debt is repaid. Suits whole requests, whose size may
    /// exceed the burst.
    pub fn take_with_debt(&self, key: u64, n: f64, now: Instant) -> Verdict {
        self.with_bucket(key, now, |rate, b| {
            if b.tokens > 0.0 {
                b.tokens -= n;
                Verdict::Allow
            } else {
                Verdict::Deny(Duration::from_secs_f64(
                    ((1.0 - b.tokens) / rate.per_second).min(3600.0),
                ))
            }
        })
    }

    /// Whether `key` is in debt now (a cheap check before reading a body).
    pub fn check(&self, key: u64, now: Instant) -> Verdict {
        self.with_bucket(key, now, |rate, b| {
            if b.tokens > 0.0 {
                Verdict::Allow
            } else {
                Verdict::Deny(Duration::from_secs_f64(
                    ((1.0 - b.tokens) / rate.per_second).min(3600.0),
                ))
            }
        })
    }

    /// Keys remembered now, both generations (for `/metrics`).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_bucket(
        &self,
        key: u64,
        now: Instant,
        f: impl FnOnce(Rate, &mut Bucket) -> Verdict,
    ) -> Verdict {
        if self.rate.is_unlimited() {
            return Verdict::Allow;
        }
        let rate = self.rate;
        let mut shard = lock(&self.shards[(key as usize) % SHARDS]);
        let shard = &mut *shard;
        // The cheap conditions first: the lookup runs only when a rotation
        // is due, and a known key then takes one probe of each table.
        if (now.saturating_duration_since(shard.rotated_at) >= self.period
            || shard.current.len() >= self.shard_capacity)
            && !shard.current.contains_key(&key)
        {
            // Rotate only when a key is added: a busy generation of known
            // keys is never dropped. The dropped generation's table is
            // reused, so a rotation neither frees nor regrows memory.
            std::mem::swap(&mut shard.previous, &mut shard.current);
            shard.current.clear();
            shard.rotated_at = now;
        }
        let bucket = match shard.current.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(shard.previous.remove(&key).unwrap_or(Bucket {
                tokens: rate.burst,
                at: now,
            })),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.at = now;
        f(rate, bucket)
    }
}

fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves a consistent map (every update
    // is a single assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_takes_refuse_beyond_the_burst_and_refill_over_time() {
        let l = RateLimiter::new(Rate::per_second(100.0), 1000);
        let t0 = Instant::now();
        let k = RateLimiter::key_hash(b"u1");
        for _ in 0..100 {
            assert_eq!(l.take_exact(k, 1.0, t0), Verdict::Allow);
        }
        let Verdict::Deny(wait) = l.take_exact(k, 1.0, t0) else {
            panic!("101st token in the same instant must be refused");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(11),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert_eq!(
            l.take_exact(RateLimiter::key_hash(b"u2"), 1.0, t0),
            Verdict::Allow
        );
        // 50 ms later, 5 tokens are back.
        let t1 = t0 + Duration::from_millis(50);
        for _ in 0..5 {
            assert_eq!(l.take_exact(k, 1.0, t1), Verdict::Allow);
        }
        assert!(matches!(l.take_exact(k, 1.0, t1), Verdict::Deny(_)));
    }

    #[test]
    fn debt_lets_one_large_request_through_then_waits_for_repayment() {
        let l = RateLimiter::new(Rate::per_second(1000.0), 10);
        let t0 = Instant::now();
        assert_eq!(l.take_with_debt(1, 3000.0, t0), Verdict::Allow);
        let Verdict::Deny(wait) = l.take_with_debt(1, 1.0, t0) else {
            panic!("a key in debt must wait");
        };
        // Debt of 2,000 at 1,000/s: a little over 2 s.
        assert!(
            wait >= Duration::from_secs(2) && wait < Duration::from_millis(2100),
            "{wait:?}"
        );
        assert!(matches!(
            l.check(1, t0 + Duration::from_secs(1)),
            Verdict::Deny(_)
        ));
        assert_eq!(l.check(1, t0 + Duration::from_millis(2002)), Verdict::Allow);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let l = RateLimiter::new(Rate::per_second(100.0), 1_600);
        let t0 = Instant::now();
        for k in 0..1_000_000u64 {
            l.take_exact(RateLimiter::key_hash(&k.to_le_bytes()), 1.0, t0);
        }
        // Two generations of at most capacity / 16 per shard each.
        assert!(l.len() <= 2 * 1_600, "{} keys remembered", l.len());
        assert!(l.len() >= 1_600 / 2, "{} keys remembered", l.len());
    }

    #[test]
    fn a_bucket_keeps_its_state_across_a_rotation() {
        // Two keys per shard: adding a third key to the same shard rotates
        // the generations.
        let l = RateLimiter::new(Rate::per_second(10.0), 2 * SHARDS);
        let t0 = Instant::now();
        let k = 42;
        for _ in 0..10 {
            assert_eq!(l.take_exact(k, 1.0, t0), Verdict::Allow);
        }
        for other in [k + SHARDS as u64, k + 2 * SHARDS as u64] {
            assert_eq!(l.take_exact(other, 1.0, t0), Verdict::Allow);
        }
        assert_eq!(l.len(), 3);
        // The emptied bucket came back from the previous generation.
        assert!(matches!(l.take_exact(k, 1.0, t0), Verdict::Deny(_)));
    }

    #[test]
    fn unlimited_allows_everything_and_remembers_nothing() {
        let l = RateLimiter::new(Rate::unlimited(), 10);
        let t0 = Instant::now();
        for k in 0..100 {
            assert_eq!(l.take_exact(k, 1e9, t0), Verdict::Allow);
        }
        assert!(l.is_empty());
    }
}
