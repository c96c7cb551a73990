//! What a service operation can refuse or fail with, independent of HTTP.
//!
//! In-process callers match on these; the API converts them into
//! [`AppError`](crate::AppError), the only thing that renders HTTP.

use crate::auth::Perm;
use crate::model::Status;
use crate::service::layers::Allocation;
use crate::service::lifecycle::Action;
use crate::store::StoreError;

/// Why a service operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// An input field is invalid.
    #[error("{message}")]
    Validation {
        /// The offending field, e.g. `reason`.
        field: String,
        /// Lowercase, names the field.
        message: String,
    },
    /// No such entity.
    #[error("{what} {key:?} not found")]
    NotFound {
        /// What was looked for, e.g. `experiment`.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// The caller lacks a permission.
    #[error("missing permission {}{}", .permission.as_str(), detail_suffix(.detail))]
    Forbidden {
        /// The missing permission.
        permission: Perm,
        /// Why, beyond the role (e.g. another team's experiment).
        detail: Option<String>,
    },
    /// The lifecycle action is not allowed in the current status.
    #[error("cannot {} an experiment in status {}; allowed next states: {}", .action.as_str(), .status.as_str(), list_or_none(.allowed))]
    IllegalTransition {
        /// The refused action.
        action: Action,
        /// The current status.
        status: Status,
        /// The next states reachable from it.
        allowed: Vec<&'static str>,
    },
    /// The revision the caller last read is not the current one.
    #[error("revision {expected} is stale, the current revision is {actual}")]
    StaleRevision {
        /// The revision sent.
        expected: i64,
        /// The current revision.
        actual: i64,
    },
    /// A ramp would lower ramp_percent.
    #[error("ramp_percent can only go up (from {from} to {to}); ramp down by pause or kill")]
    RampDown {
        /// The current ramp_percent.
        from: f64,
        /// The requested one.
        to: f64,
    },
    /// The entity changed between the permission check and the write.
    #[error("{what} {key:?} was changed concurrently; retry")]
    Concurrent {
        /// What changed, e.g. `experiment`.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// An entity with this key exists.
    #[error("{what} {key:?} already exists")]
    AlreadyExists {
        /// What, e.g. `experiment`.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// The definition of an experiment is frozen once it leaves draft.
    #[error("experiment {key:?} is {}: its definition, including the pre-registered hypothesis, metrics, mde, planned units, alpha, sequential method and analysis settings, is frozen once it leaves draft", .status.as_str())]
    Frozen {
        /// The experiment.
        key: String,
        /// Its status.
        status: Status,
    },
    /// The requested range overlaps ranges held in the layer.
    #[error("range [{}, {}) overlaps live experiments of layer {layer:?}: {}", .range[0], .range[1], overlap_names(.overlaps))]
    RangeOverlap {
        /// The layer.
        layer: String,
        /// The requested range.
        range: [u16; 2],
        /// The ranges it overlaps.
        overlaps: Vec<Allocation>,
    },
    /// A layer has no free range of the size asked for.
    #[error("layer {layer:?} has no free range of size {size}")]
    LayerFull {
        /// The layer.
        layer: String,
        /// The size asked for.
        size: u16,
        /// Its free ranges.
        free: Vec<[u16; 2]>,
    },
    /// A definition is still used and cannot be deleted.
    #[error("{what} {key:?} is used by experiments {}; archive them or change their {what}s first", .by.join(", "))]
    InUse {
        /// What, e.g. `metric`.
        what: &'static str,
        /// Its key.
        key: String,
        /// The experiments (not archived) using it.
        by: Vec<String>,
    },
    /// Results are published only for an experiment that has started.
    #[error("experiment {key:?} has not started (status {}); results can only be published once it has", .status.as_str())]
    NotStarted {
        /// The experiment.
        key: String,
        /// Its status.
        status: Status,
    },
    /// The change conflicts with the entity's state (e.g. a look already
    /// retracted).
    #[error("{0}")]
    Conflict(String),
    /// A failure that is a bug or of the machine (no randomness).
    #[error("{0}")]
    Internal(String),
    /// The change would publish a snapshot that does not compile.
    #[error("the change would publish an invalid snapshot: {0}")]
    InvalidSnapshot(strata_core::SnapshotError),
    /// The config store failed.
    #[error("config store: {0}")]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// A validation error of `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A request model's validation error (`crate::model`'s checks answer
    /// in the HTTP error type) as a service error of the same field.
    pub fn from_request(e: crate::AppError) -> Self {
        Self::validation(e.field.unwrap_or_default(), e.message)
    }
}

/// `a, b, c`, or `none`.
fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The experiments holding `overlaps`, comma-separated.
fn overlap_names(overlaps: &[Allocation]) -> String {
    let names: Vec<&str> = overlaps.iter().map(|o| o.experiment.as_str()).collect();
    names.join(", ")
}

/// `: detail`, or nothing.
fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}
