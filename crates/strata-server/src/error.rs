//! The server's error type: [`strata_http::AppError`], shared with every HTTP
//! service of the process, and how the store's errors become one.

use axum::http::StatusCode;
use serde_json::json;

pub use strata_http::AppError;

use crate::service::ServiceError;
use crate::store::StoreError;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                Self::unavailable(format!("the config store is unavailable: {m}"))
            }
            StoreError::Corrupt(m) => Self::internal(format!("corrupt stored data: {m}")),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

impl From<ServiceError> for AppError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Validation { field, message } => Self::validation(field, message),
            ServiceError::NotFound { what, key } => Self::not_found(what, &key),
            ServiceError::Forbidden { permission, detail } => {
                Self::forbidden(permission.as_str(), detail.as_deref())
            }
            ServiceError::IllegalTransition {
                action,
                status,
                allowed,
            } => Self::illegal_transition(action.as_str(), status.as_str(), &allowed),
            ServiceError::StaleRevision { expected, actual } => {
                Self::stale_revision(expected, actual)
            }
            ServiceError::RampDown { .. } => {
                Self::new(StatusCode::CONFLICT, "ramp_down", message).with_field("ramp_percent")
            }
            ServiceError::Concurrent { .. } => Self::new(StatusCode::CONFLICT, "conflict", message),
            ServiceError::AlreadyExists { what, key } => Self::already_exists(what, &key),
            ServiceError::Frozen { .. } => {
                Self::new(StatusCode::CONFLICT, "frozen", message).with_field("status")
            }
            ServiceError::RangeOverlap { overlaps, .. } => {
                Self::validation("range", message).with_extra(json!({ "overlaps": overlaps }))
            }
            ServiceError::LayerFull { free, .. } => {
                Self::new(StatusCode::CONFLICT, "layer_full", message)
                    .with_field("size")
                    .with_extra(json!({ "free": free }))
            }
            ServiceError::InUse { by, .. } => Self::new(StatusCode::CONFLICT, "conflict", message)
                .with_extra(json!({ "experiments": by })),
            ServiceError::NotStarted { .. } => {
                Self::new(StatusCode::CONFLICT, "not_started", message)
            }
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Internal(m) => Self::internal(m),
            ServiceError::InvalidSnapshot(e) => crate::state::invalid_snapshot(e),
            ServiceError::Store(e) => Self::from(e),
        }
    }
}

/// A definition that breaks a rule of the platform vocabulary: 400
/// `validation`, naming the field as the model does. (A function, not a
/// `From` impl: neither type is this crate's.)
pub fn model_error(e: strata_model::ModelError) -> AppError {
    AppError::validation(e.field(), e.to_string())
}
