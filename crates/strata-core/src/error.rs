//! Errors of loading and validating a snapshot.

/// Why a snapshot could not be loaded. Each message names the offending
/// experiment, layer or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The document is not valid JSON or does not have the snapshot's shape.
    #[error("invalid snapshot json at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What serde reported.
        message: String,
    },
    /// Two experiments share a key.
    #[error("duplicate experiment key {key:?}")]
    DuplicateExperiment {
        /// The repeated key.
        key: String,
    },
    /// Two experiments share a client-facing flag.
    #[error("duplicate flag {flag:?} (experiments {first:?} and {second:?})")]
    DuplicateFlag {
        /// The repeated flag.
        flag: String,
        /// The first experiment with it.
        first: String,
        /// The second experiment with it.
        second: String,
    },
    /// Two layers share a key.
    #[error("duplicate layer key {key:?}")]
    DuplicateLayer {
        /// The repeated key.
        key: String,
    },
    /// An experiment names a layer the snapshot does not define.
    #[error("experiment {experiment:?}: unknown layer {layer:?}")]
    UnknownLayer {
        /// The experiment.
        experiment: String,
        /// The layer it names.
        layer: String,
    },
    /// A layer range is malformed: outside `0..=1000`, empty, or given without a layer
    /// (or a layer given without a range).
    #[error("experiment {experiment:?}: field range: {reason}")]
    InvalidRange {
        /// The experiment.
        experiment: String,
        /// What is wrong.
        reason: String,
    },
    /// Two live experiments of one layer own overlapping bucket ranges.
    #[error("layer {layer:?}: ranges of experiments {first:?} {first_range:?} and {second:?} {second_range:?} overlap")]
    OverlappingRanges {
        /// The layer.
        layer: String,
        /// One experiment.
        first: String,
        /// Its range.
        first_range: [u16; 2],
        /// The other experiment.
        second: String,
        /// Its range.
        second_range: [u16; 2],
    },
    /// The variant weights of an experiment sum to zero (or it has no variants).
    #[error("experiment {experiment:?}: field variants: total weight is zero")]
    ZeroTotalWeight {
        /// The experiment.
        experiment: String,
    },
    /// A field holds a value outside its allowed domain.
    #[error("{location}: field {field}: {reason}")]
    InvalidField {
        /// The experiment or holdout concerned, e.g. `experiment "exp_a"`.
        location: String,
        /// The field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A targeting rule is malformed.
    #[error("experiment {experiment:?}: field targeting{path}: {reason}")]
    InvalidTargeting {
        /// The experiment.
        experiment: String,
        /// Where in the rule tree, e.g. `.all[2].any[0]`.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl SnapshotError {
    /// A stable, machine-readable name of the error kind (used by the
    /// conformance suite and in API error codes).
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotError::Json { .. } => "json",
            SnapshotError::DuplicateExperiment { .. } => "duplicate_experiment",
            SnapshotError::DuplicateFlag { .. } => "duplicate_flag",
            SnapshotError::DuplicateLayer { .. } => "duplicate_layer",
            SnapshotError::UnknownLayer { .. } => "unknown_layer",
            SnapshotError::InvalidRange { .. } => "invalid_range",
            SnapshotError::OverlappingRanges { .. } => "overlapping_ranges",
            SnapshotError::ZeroTotalWeight { .. } => "zero_total_weight",
            SnapshotError::InvalidField { .. } => "invalid_field",
            SnapshotError::InvalidTargeting { .. } => "invalid_targeting",
        }
    }
}

impl From<serde_json::Error> for SnapshotError {
    fn from(e: serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its Display; keep only the cause.
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_owned(),
            None => full,
        };
        SnapshotError::Json {
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}
