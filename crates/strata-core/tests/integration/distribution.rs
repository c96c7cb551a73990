//! Statistical properties of bucketing over a million synthetic ids.

use strata_core::hash::{bucket, SaltKey, UnitHasher};

use crate::common::chi2_sf;

const UNITS: usize = 1_000_000;
/// Rejection level of the goodness-of-fit tests. The inputs are fixed, so a
/// pass is reproducible, not a matter of luck on each run.
const ALPHA: f64 = 0.001;

fn ids() -> impl Iterator<Item = String> {
    (0..UNITS).map(|i| format!("user-{i}"))
}

#[test]
fn buckets_are_uniform_for_several_salts() {
    for salt in [
        "a7f3b2c1",
        "holdout_v4",
        "L-checkout-9f2",
        "a7f3b2c1:ramp",
        "ümlaut-sälz",
    ] {
        let suffix = SaltKey::new(salt);
        let mut counts = vec![0u64; 1000];
        for id in ids() {
            counts[usize::from(UnitHasher::new(&id).bucket(&suffix))] += 1;
        }
        let expected = UNITS as f64 / 1000.0;
        let stat: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        let p = chi2_sf(stat, 999.0);
        assert!(p >= ALPHA, "salt {salt:?}: chi2 {stat:.1}, p {p:.2e}");
    }
}

#[test]
fn buckets_of_different_salts_are_independent() {
    // Layer, ramp and variant buckets of one experiment, and the holdout:
    // every pair must look independent. A 20x20 contingency table of
    // bucket/50 pairs is tested with chi-squared (df = 19 * 19), and the
    // Pearson correlation of the raw buckets must be ~0 (|r| < 4.5 / sqrt(n)).
    let salts = ["L-checkout-9f2", "a7f3b2c1:ramp", "a7f3b2c1", "holdout_v4"];
    let suffixes: Vec<SaltKey> = salts.iter().map(|s| SaltKey::new(s)).collect();
    let mut buckets = vec![Vec::with_capacity(UNITS); salts.len()];
    for id in ids() {
        let h = UnitHasher::new(&id);
        for (i, s) in suffixes.iter().enumerate() {
            buckets[i].push(h.bucket(s));
        }
    }
    for a in 0..salts.len() {
        for b in a + 1..salts.len() {
            let mut table = [[0u64; 20]; 20];
            let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for (&x, &y) in buckets[a].iter().zip(&buckets[b]) {
                table[usize::from(x / 50)][usize::from(y / 50)] += 1;
                let (x, y) = (f64::from(x), f64::from(y));
                sx += x;
                sy += y;
                sxx += x * x;
                syy += y * y;
                sxy += x * y;
            }
            let n = UNITS as f64;
            let expected = n / 400.0;
            let stat: f64 = table
                .iter()
                .flatten()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum();
            let p = chi2_sf(stat, 19.0 * 19.0);
            assert!(
                p >= ALPHA,
                "{} vs {}: chi2 {stat:.1} p {p:.2e}",
                salts[a],
                salts[b]
            );
            let r = (n * sxy - sx * sy) / ((n * sxx - sx * sx).sqrt() * (n * syy - sy * sy).sqrt());
            assert!(
                r.abs() < 4.5 / n.sqrt(),
                "{} vs {}: correlation {r}",
                salts[a],
                salts[b]
            );
        }
    }
}

#[test]
fn a_biased_hash_would_be_caught() {
    // The uniformity test must be able to fail: a bucket function that
    // favours low buckets (1 in 20 ids folded into 0..500, a 2.5 % skew) is rejected.
    let mut counts = vec![0u64; 1000];
    for (i, id) in ids().enumerate() {
        let b = usize::from(bucket(&id, "a7f3b2c1"));
        counts[if i % 20 == 0 { b % 500 } else { b }] += 1;
    }
    let expected = UNITS as f64 / 1000.0;
    let stat: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2_sf(stat, 999.0) < ALPHA, "chi2 {stat}");
}
