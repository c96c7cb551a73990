//! Group-sequential boundaries against published values.

use crate::prec::TABLE_3DP;
use strata_stats::sequential::{group_sequential_boundaries, Spending};

/// K = 5 equally spaced looks, two-sided α = 0.05, Lan–DeMets
/// O'Brien–Fleming-type spending `2 − 2Φ(z_{1−α/4}/√t)` per side.
///
/// Source: R package `ldbounds` (Casper & Perez), `ldBounds(t = 1:5/5,
/// iuse = 1, alpha = 0.025, sides = 2)`, as quoted in the `ldbounds` manual
/// and reproduced by `gsDesign` (`sfLDOF`) and `rpact` (`typeOfDesign =
/// "asOF"`); also Jennison & Turnbull (2000), Table 7.6.
#[test]
fn obrien_fleming_k5() {
    let t: Vec<f64> = (1..=5).map(|k| f64::from(k) / 5.0).collect();
    let looks = group_sequential_boundaries(&t, 0.05, Spending::OBrienFleming).unwrap();
    let published = [4.877, 3.357, 2.680, 2.290, 2.031];
    for (l, p) in looks.iter().zip(published) {
        assert!(
            (l.boundary - p).abs() <= TABLE_3DP,
            "boundary {} vs published {p}",
            l.boundary
        );
    }
    assert!((looks[4].alpha_spent - 0.05).abs() < 1e-15);
}

/// K = 5 equally spaced looks, two-sided α = 0.05, Lan–DeMets Pocock-type
/// spending `α ln(1 + (e − 1)t)`.
///
/// Source: `ldbounds::ldBounds(t = 1:5/5, iuse = 2, alpha = 0.025, sides = 2)`;
/// the same values are given by `gsDesign::sfLDPocock` and `rpact`
/// (`typeOfDesign = "asP"`).
#[test]
fn pocock_k5() {
    let t: Vec<f64> = (1..=5).map(|k| f64::from(k) / 5.0).collect();
    let looks = group_sequential_boundaries(&t, 0.05, Spending::Pocock).unwrap();
    let published = [2.438, 2.427, 2.410, 2.397, 2.386];
    for (l, p) in looks.iter().zip(published) {
        assert!(
            (l.boundary - p).abs() <= TABLE_3DP,
            "boundary {} vs published {p}",
            l.boundary
        );
    }
}
