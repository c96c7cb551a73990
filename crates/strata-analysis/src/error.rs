//! The error type of the analysis engine.

use std::path::PathBuf;

/// Why an analysis could not be run.
///
/// Messages are lowercase, without trailing punctuation, and name the file,
/// line/column or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A spec or metrics document could not be parsed.
    #[error("{path}: {location}{message}")]
    Parse {
        /// The document.
        path: PathBuf,
        /// `line L column C: ` when known, else empty.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A spec or metrics document parsed but is inconsistent.
    #[error("{document}: field `{field}`: {reason}")]
    Invalid {
        /// `spec`, `metrics` or the document's path.
        document: String,
        /// The offending field, as a path such as `metrics[2].quantile`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An input data set (exposures or events) is unusable.
    #[error("{table} input {path}: {reason}")]
    Input {
        /// `exposures` or `events`.
        table: &'static str,
        /// The path given for it.
        path: String,
        /// What is wrong, naming the column (and line, when known).
        reason: String,
    },
    /// A command-line option is unusable.
    #[error("option `{option}`: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The query engine failed.
    #[error("query engine: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// The statistics engine rejected the statistics.
    #[error("statistics: {0}")]
    Stats(#[from] strata_stats::Error),
}

/// Result alias of the analysis engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(
        document: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            document: document.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}
