//! The platform vocabulary Strata's planes share: the metric registry,
//! guardrail definitions, the sequential testing method, an experiment's
//! pre-registered definition and analysis settings ([`plan`]), the results document ([`results`]) and the
//! global holdout's periods and looks ([`holdout`]) the
//! analysis engine writes and the control plane stores when it is published.
//!
//! The control plane (`strata-server`) stores and serves these definitions
//! and the analysis engine (`strata-analysis`) computes them; both read the
//! same documents, so both use these types and the one validation here. A
//! definition the server accepts is one the analysis can run, and the reverse.
//!
//! The crate does no I/O: it is serde types and checks. Errors
//! ([`ModelError`]) name the offending field as a path relative to the value
//! validated (`numerator.filter.type`); validating a registry prefixes the
//! metric's position (`metrics[2].numerator.filter.type`).

pub mod bots;
pub mod check;
pub mod error;
pub mod experiment;
pub mod guardrail;
pub mod holdout;
pub mod metric;
pub mod plan;
pub mod results;
pub mod sequential;

pub use bots::{BotDetection, Limit, TypeLimits};
pub use check::{check_key, check_text, KEY_MAX_BYTES};
pub use error::ModelError;
pub use experiment::{ExperimentDefinition, VariantDefinition};
pub use guardrail::{AppliesTo, AutoAction, GuardrailDef, GuardrailDirection, ResolvedGuardrail};
pub use holdout::KeyMetrics;
pub use metric::{
    Direction, EventTypes, Filter, Metric, MetricRegistry, MetricType, Operators, Predicate,
    Scalar, SubMetric, DESCRIPTION_MAX_BYTES, EVENT_TYPE_MAX_BYTES,
};
pub use plan::{AnalysisMode, CupedSpec, MultipleTesting, SrmAction};
pub use sequential::SequentialMethod;
