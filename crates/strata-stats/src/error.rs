//! The crate's error type.

/// Everything that can go wrong when computing statistics.
///
/// Degenerate but legitimate data (too few units, zero variance) is not an
/// error: results carry an `insufficient_data` marker instead. Errors are for
/// inputs that cannot be right: non-finite values, mismatched lengths,
/// parameters outside their domain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value that must be finite was NaN or infinite.
    #[error("{field} must be finite, got {value}")]
    NonFinite {
        /// The offending field.
        field: &'static str,
        /// The value that was passed.
        value: f64,
    },
    /// A parameter was outside its allowed range.
    #[error("{field} must be {expected}, got {value}")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// The allowed range, in words.
        expected: &'static str,
        /// The value that was passed.
        value: f64,
    },
    /// Two inputs that must have the same length did not.
    #[error("{field} has {actual} entries, expected {expected}")]
    LengthMismatch {
        /// The offending field.
        field: &'static str,
        /// The length required.
        expected: usize,
        /// The length passed.
        actual: usize,
    },
    /// An input was internally inconsistent (for example a negative sum of
    /// squared deviations, or information fractions that do not increase).
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A numerical procedure did not converge.
    #[error("{what} did not converge")]
    NoConvergence {
        /// The procedure that failed.
        what: &'static str,
    },
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Returns `value` if finite, else a [`Error::NonFinite`] naming `field`.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NonFinite { field, value })
    }
}

/// Checks that `alpha` is a usable significance level in (0, 1).
pub(crate) fn check_alpha(field: &'static str, alpha: f64) -> Result<f64> {
    finite(field, alpha)?;
    if alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err(Error::OutOfRange {
            field,
            expected: "in (0, 1)",
            value: alpha,
        })
    }
}
