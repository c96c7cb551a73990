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
    /// An input data set (exposures, events or aliases) is unusable.
    #[error("{table} input {path}: {reason}")]
    Input {
        /// `exposures`, `events` or `aliases`.
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
    /// The exposures hold no exposure of the spec's experiment at any time:
    /// most likely a wrong experiment key or exposures path.
    #[error(
        "no exposures of experiment \"{experiment}\" in {path}; {}",
        holds_experiments(experiments)
    )]
    NoExposures {
        /// The spec's experiment key.
        experiment: String,
        /// The exposures path given.
        path: String,
        /// The experiment keys the exposures do hold, sorted (beyond
        /// [`LISTED`] of them, the message ends with `…`).
        experiments: Vec<String>,
    },
    /// The experiment's exposures name none of the spec's variants, or lack
    /// some of them while naming variants the spec does not have: most likely
    /// misspelt variant keys. (A spec variant without exposures is not an
    /// error by itself: a small experiment may have none yet.)
    #[error("{} of the spec {} not in the data of experiment \"{experiment}\"; it holds {}", quoted_variants(missing), if missing.len() == 1 { "is" } else { "are" }, quoted_list(present))]
    UnknownVariants {
        /// The spec's experiment key.
        experiment: String,
        /// The spec's variants with no exposure in the data.
        missing: Vec<String>,
        /// The variants the experiment's exposures do name, sorted (beyond
        /// [`LISTED`] of them, the message ends with `…`).
        present: Vec<String>,
    },
    /// The query engine failed.
    #[error("query engine: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// The statistics engine rejected the statistics.
    #[error("statistics: {0}")]
    Stats(#[from] strata_stats::Error),
}

/// At most this many names are listed in [`Error::NoExposures`] and
/// [`Error::UnknownVariants`]; a longer list ends with `…`.
pub const LISTED: usize = 20;

fn quoted_list(names: &[String]) -> String {
    let mut list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    if list.len() > LISTED {
        list.truncate(LISTED);
        list.push("…".into());
    }
    list.join(", ")
}

fn quoted_variants(names: &[String]) -> String {
    let noun = if names.len() == 1 {
        "variant"
    } else {
        "variants"
    };
    format!("{noun} {}", quoted_list(names))
}

fn holds_experiments(names: &[String]) -> String {
    if names.is_empty() {
        "the data holds no exposures".into()
    } else {
        format!("the data holds experiments {}", quoted_list(names))
    }
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
