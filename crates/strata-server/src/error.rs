//! The server's one error type and its JSON rendering.
//!
//! Every handler returns `Result<_, AppError>`; the body is always
//! `{"error": {"code", "message", "field"}}` (plus `allowed` for illegal
//! lifecycle transitions and `permission` for denied requests), whatever went
//! wrong: bad JSON, validation, auth, conflicts or a failing store.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `validation`, `conflict`.
    pub code: &'static str,
    /// Human-readable, lowercase, no trailing punctuation.
    pub message: String,
    /// The offending request field, if any (e.g. `variants[1].weight`).
    pub field: Option<String>,
    /// Extra members of the error object (`allowed`, `permission`, …).
    pub extra: Option<Value>,
    /// Seconds to put in a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl AppError {
    /// A new error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            extra: None,
            retry_after: None,
        }
    }

    /// Sets the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds members to the error object.
    pub fn with_extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// 400: a field failed validation.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", message).with_field(field)
    }

    /// 400: the body is not valid JSON of the expected shape.
    pub fn bad_json(message: impl Into<String>, field: Option<String>) -> Self {
        Self {
            field,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
        }
    }

    /// 404: no such entity.
    pub fn not_found(what: &str, key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {key:?} not found"),
        )
    }

    /// 409: the entity already exists.
    pub fn already_exists(what: &str, key: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("{what} {key:?} already exists"),
        )
        .with_field("key")
    }

    /// 409: the client's revision is stale.
    pub fn stale_revision(expected: i64, actual: i64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "stale_revision",
            format!("revision {expected} is stale, the current revision is {actual}"),
        )
        .with_field("revision")
        .with_extra(json!({"revision": actual}))
    }

    /// 409: the lifecycle action is not allowed in the current status.
    pub fn illegal_transition(action: &str, status: &str, allowed: &[&str]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "illegal_transition",
            format!(
                "cannot {action} an experiment in status {status}; allowed next states: {}",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ),
        )
        .with_field("status")
        .with_extra(json!({"status": status, "allowed": allowed}))
    }

    /// 401: no or unknown bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token lacks a permission.
    pub fn forbidden(permission: &str, detail: Option<&str>) -> Self {
        let message = match detail {
            Some(d) => format!("missing permission {permission}: {d}"),
            None => format!("missing permission {permission}"),
        };
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            .with_extra(json!({"permission": permission}))
    }

    /// 429: over the token's rate limit.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded for this token",
            )
        }
    }

    /// 503: the store cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }

    /// 500: a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut err = json!({
            "code": self.code,
            "message": self.message,
            "field": self.field,
        });
        if let (Some(Value::Object(extra)), Some(obj)) = (&self.extra, err.as_object_mut()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        json!({ "error": err })
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

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

impl From<strata_model::ModelError> for AppError {
    /// A definition that breaks a rule of the platform vocabulary: 400
    /// `validation`, naming the field as the model does.
    fn from(e: strata_model::ModelError) -> Self {
        AppError::validation(e.field(), e.to_string())
    }
}
