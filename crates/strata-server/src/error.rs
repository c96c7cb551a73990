//! The server's error type: [`strata_http::AppError`], shared with every HTTP
//! service of the process, and how the store's errors become one.

use axum::http::StatusCode;

pub use strata_http::AppError;

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
