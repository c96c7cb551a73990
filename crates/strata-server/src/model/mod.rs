//! The definitions the control plane owns, as stored and as served by the API.
//!
//! Requests are parsed into `*Request` types (unknown fields rejected);
//! stored records carry the server-managed fields (status, revision, salt,
//! flag, timestamps). Field-level validation that needs no other entity lives
//! here; checks against the registry and the layers live in the services
//! ([`crate::service`]).
//!
//! One part per kind of thing described: experiments with their lifecycle
//! status and variants (`experiment`), what divides traffic before any
//! experiment sees it — layers and the global holdout (`traffic`) — and the
//! field checks every request shares (`check`).

mod check;
mod experiment;
mod traffic;

pub use check::{check_key, check_percent, check_targeting, check_text, percent_to_permille};
pub use experiment::{
    check_ramp_plan, ExperimentRecord, ExperimentRequest, RampStage, Status, VariantDef,
    MAX_RAMP_HOURS, MAX_RAMP_STAGES,
};
pub use traffic::{
    BotDetectionRecord, HoldoutRecord, HoldoutRequest, KeyMetricsRecord, KeyMetricsRequest,
    LayerRecord, LayerRequest, DEFAULT_LAYER,
};

// The metric registry and guardrail definitions are the platform's
// (strata-model), shared with the analysis so both apply one validation; their
// OpenAPI schemas are in `crate::schema`.
pub use strata_model::{GuardrailDef, Metric as MetricDef};
