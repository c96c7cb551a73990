//! The field checks the requests share, with the platform's rules where the
//! platform has one (keys and text in strata-model, targeting rules in
//! strata-core), so a value the server accepts is one the rest of Strata
//! accepts too.

use serde_json::Value;

use crate::error::AppError;

/// Converts a percentage (0–100, multiples of 0.1) to permille.
pub fn percent_to_permille(p: f64) -> Option<u16> {
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let scaled = p * 10.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    u16::try_from(rounded as i64).ok()
}

/// Validates a percentage field.
pub fn check_percent(field: &str, p: f64) -> Result<u16, AppError> {
    percent_to_permille(p).ok_or_else(|| {
        AppError::validation(
            field,
            format!("{field} must be between 0 and 100 in steps of 0.1, got {p}"),
        )
    })
}

/// Checks a key: non-empty, at most 128 bytes of `[A-Za-z0-9_.-]` (the
/// platform's one key rule, [`strata_model::check_key`]).
pub fn check_key(field: &str, key: &str) -> Result<(), AppError> {
    strata_model::check_key(field, key).map_err(crate::error::model_error)
}

/// Checks a free-text field's length.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    strata_model::check_text(field, value, max).map_err(crate::error::model_error)
}

/// Validates a targeting rule with strata-core's own compiler.
pub fn check_targeting(rule: &Value) -> Result<(), AppError> {
    strata_core::targeting::validate(rule).map_err(|e| {
        // The error's text is `targeting{path}: {reason}`, the message
        // clients have always received.
        AppError::validation(format!("targeting{}", e.path()), e.to_string())
    })
}
