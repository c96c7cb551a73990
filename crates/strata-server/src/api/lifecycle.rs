//! An experiment's lifecycle over HTTP: `POST /api/v1/experiments/{key}/{action}`.
//!
//! Each action takes its own small body (all of them an optional
//! `revision`); the body is parsed and checked before the store is touched,
//! and the transition itself, with its permissions and its audit entry, is
//! [`crate::service::ExperimentService::act`]'s.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Auth;
use crate::error::AppError;
use crate::json::parse;
use crate::model::ExperimentRecord;
use crate::service::{ActParams, Action, ExperimentService};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBody {
    #[serde(default)]
    revision: Option<i64>,
}

/// `pause`: why, optionally (audited).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    revision: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RampBody {
    #[serde(default)]
    ramp_percent: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    revision: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    reason: String,
    #[serde(default)]
    revision: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcludeBody {
    winner: Value,
    #[serde(default)]
    revision: Option<i64>,
}

fn body_or_empty<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(bytes)
    }
}

/// `POST /api/v1/experiments/{key}/{action}`: `submit`, `approve`, `start`,
/// `ramp`, `pause`, `resume`, `kill`, `conclude`, `archive`.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/{action}", tag = "experiments",
    params(("key" = String, Path), ("action" = String, Path, description = "submit | approve | start | ramp | pause | resume | kill | conclude | archive")),
    request_body(content = Object, description = "start/ramp: {\"ramp_percent\": 1} (ramp: optional \"reason\"); pause: optional {\"reason\": \"…\"}; kill: {\"reason\": \"…\"}; conclude: {\"winner\": \"treatment\" | null}; every action: optional \"revision\""),
    responses((status = 200, body = ExperimentRecord), (status = 409, description = "illegal transition, with the allowed next states")))]
pub async fn action(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ExperimentRecord>, AppError> {
    let Some(act) = Action::parse(&action) else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!("unknown action {action:?}; expected submit, approve, start, ramp, pause, resume, kill, conclude or archive"),
        ));
    };
    // Parse the body before touching the store.
    let params = match act {
        Action::Submit | Action::Approve | Action::Resume | Action::Archive => ActParams {
            revision: body_or_empty::<PlainBody>(&body)?.revision,
            ..ActParams::default()
        },
        Action::Pause => {
            let b = body_or_empty::<PauseBody>(&body)?;
            ActParams {
                revision: b.revision,
                reason: b.reason,
                ..ActParams::default()
            }
        }
        Action::Start | Action::Ramp => {
            let b: RampBody = if body.iter().all(u8::is_ascii_whitespace) {
                RampBody {
                    ramp_percent: None,
                    reason: None,
                    revision: None,
                }
            } else {
                parse(&body)?
            };
            ActParams {
                revision: b.revision,
                ramp_percent: b.ramp_percent,
                reason: b.reason,
                ..ActParams::default()
            }
        }
        Action::Kill => {
            let b: KillBody = parse(&body)?;
            ActParams {
                revision: b.revision,
                reason: Some(b.reason),
                ..ActParams::default()
            }
        }
        Action::Conclude => {
            let b: ConcludeBody = parse(&body)?;
            let winner = match b.winner {
                Value::Null => None,
                Value::String(s) => Some(s),
                _ => {
                    return Err(AppError::validation(
                        "winner",
                        "winner must be a variant key or null",
                    ))
                }
            };
            ActParams {
                revision: b.revision,
                winner,
                ..ActParams::default()
            }
        }
    };
    let e = ExperimentService::new(state)
        .act(&auth.actor(), &key, act, params)
        .await?;
    Ok(Json(e))
}
