//! A JSON body extractor whose rejections are [`AppError`]s.
//!
//! axum's own `Json` answers malformed bodies with plain text; this one
//! answers with the API's error shape and names the offending field (via
//! `serde_path_to_error`), so `{"variants": [{"weight": "x"}]}` is reported
//! at `variants[0].weight`.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use strata_http::body::{read_limited, BodyError};

use crate::error::AppError;
use crate::state::AppState;

/// A JSON request body (any `Content-Type` is accepted; the body must be JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// A raw request body of at most the configured `max_body_bytes`; a longer
/// one is answered 413 `body_too_large` after the rest is drained, so the
/// client receives the answer instead of a reset connection.
#[derive(Debug, Clone, Default)]
pub struct ApiBody(pub Vec<u8>);

impl FromRequest<AppState> for ApiBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        match read_limited(&parts.headers, body, state.settings.max_body_bytes).await {
            Ok(bytes) => Ok(ApiBody(bytes)),
            Err(BodyError::TooLarge { limit }) => Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {limit} bytes"),
            )),
            Err(e) => Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                e.to_string(),
            )),
        }
    }
}

/// Parses a JSON document, reporting the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::bad_json(
            "request body is empty; expected a json object",
            None,
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = serde_message(&inner);
        let field = if inner.is_syntax() || inner.is_eof() {
            None
        } else if path == "." || path.is_empty() {
            unknown_field_name(&message).or_else(|| missing_field_name(&message))
        } else if let Some(name) = missing_field_name(&message) {
            Some(format!("{path}.{name}"))
        } else {
            match unknown_field_name(&message) {
                Some(name) if !path.ends_with(&name) => Some(format!("{path}.{name}")),
                _ => Some(path),
            }
        };
        let message = match &field {
            Some(f) => format!("field {f}: {message}"),
            None => message,
        };
        AppError::bad_json(message, field)
    })?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix.
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let trimmed = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    let trimmed = trimmed.trim_end_matches('.').replace('`', "");
    if e.is_syntax() || e.is_eof() {
        format!(
            "malformed json at line {} column {}: {trimmed}",
            e.line(),
            e.column()
        )
    } else {
        trimmed
    }
}

/// The field name of a "missing field" message.
fn missing_field_name(message: &str) -> Option<String> {
    Some(message.strip_prefix("missing field ")?.trim().to_owned())
}

/// The field name of an "unknown field" message.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field ")?;
    let end = rest.find(',').unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned())
}

/// Query-string parameters whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    e.body_text().to_lowercase(),
                )
            })
    }
}
