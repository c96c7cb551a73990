//! Tolerances used by every comparison with an external reference.

/// Relative tolerance against closed-form references (scipy/statsmodels
/// evaluating the same formula in double precision).
pub const EXACT: f64 = 1e-9;

/// Relative tolerance where the reference is itself numerical (root finding,
/// quadrature, multivariate normal integration).
pub const NUMERICAL: f64 = 1e-6;

/// Absolute tolerance of published tables printed to three decimals.
pub const TABLE_3DP: f64 = 1e-3;

/// Asserts `|actual − expected| ≤ rel·max(|expected|, floor)`.
///
/// `floor` keeps the comparison meaningful for values at or near zero.
#[track_caller]
pub fn assert_close(what: &str, actual: f64, expected: f64, rel: f64) {
    let scale = expected.abs().max(1e-300);
    let err = (actual - expected).abs();
    assert!(
        err <= rel * scale || (actual == expected),
        "{what}: got {actual:e}, expected {expected:e} (relative error {:e} > {rel:e})",
        err / scale
    );
}
