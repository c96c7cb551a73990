//! Exponential backoff with full jitter, and the randomness it needs.
//!
//! Full jitter (a uniform delay in `[0, min(cap, base·2^attempt)]`) spreads
//! the reconnects of a whole fleet after a server restart instead of
//! synchronising them. The randomness comes from the standard library's
//! randomly keyed hasher, so no RNG crate is needed for it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A uniformly distributed `u64` (not cryptographic).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The upper bound of the delay before retry `attempt` (1-based).
pub(crate) fn ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// A delay drawn uniformly from `[0, ceiling(base, cap, attempt)]`.
pub(crate) fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let top = ceiling(base, cap, attempt).as_micros() as u64;
    Duration::from_micros(random_u64() % top.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        assert_eq!(ceiling(base, cap, 1), Duration::from_millis(100));
        assert_eq!(ceiling(base, cap, 2), Duration::from_millis(200));
        assert_eq!(ceiling(base, cap, 4), Duration::from_millis(800));
        assert_eq!(ceiling(base, cap, 12), cap);
        assert_eq!(ceiling(base, cap, u32::MAX), cap);
    }

    #[test]
    fn jitter_stays_below_the_ceiling_and_varies() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        let draws: Vec<Duration> = (0..200).map(|_| full_jitter(base, cap, 3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jitter is not random: {distinct:?}");
    }
}
