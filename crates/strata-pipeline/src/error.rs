//! Errors of the local store (log, compaction, Parquet, retention, deletion).

use std::path::PathBuf;

use crate::SinkError;

/// Why a storage operation failed. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open segment`, `fsync`, `rename`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored file is not what the store wrote.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the byte offset or record index.
        reason: String,
    },
    /// Writing or reading a Parquet file failed.
    #[error("parquet {path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid store option {option}: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// The store is shut down, or its writer stopped after an unrecoverable
    /// error; reopen it.
    #[error("store closed: {0}")]
    Closed(String),
    /// The object store holding the Parquet tree failed.
    #[error("{op} {location}: {reason}")]
    Object {
        /// What was being done (`upload`, `download`, `list`, `delete`).
        op: &'static str,
        /// The object or prefix (`s3://bucket/key`).
        location: String,
        /// The cause.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        StoreError::Parquet {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for SinkError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed(reason) => SinkError::Unavailable {
                reason,
                retry_after: std::time::Duration::from_secs(1),
            },
            other => SinkError::Io(other.to_string()),
        }
    }
}

/// Shorthand for storage results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
