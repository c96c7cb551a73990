//! The operations of the control plane, callable in-process without HTTP.
//!
//! One service per kind of thing the control plane manages: experiments and
//! their lifecycle ([`experiments`]), layers ([`layers`]), the metric
//! registry, guardrail definitions, key metrics and holdout ([`registry`]),
//! the holdout's periods and looks ([`holdout`]), results
//! ([`results`]), the guardrail monitor's evaluations and their review
//! ([`guardrails`]), the power calculator ([`power`]), and keys, the audit log
//! and config rollback ([`admin`]). The management API's handlers only parse, call one of
//! them and render; a job inside the process (the scheduler, the guardrail
//! monitor) calls them as a system actor.
//!
//! Every operation takes an [`Actor`] rather than a request, checks its
//! permissions against the one table of [`permissions`], applies the
//! lifecycle of [`lifecycle`], writes through the store with an audit entry
//! under the actor's name, and refuses with a [`ServiceError`] that the API
//! turns into its HTTP error.

mod actor;
pub mod admin;
pub mod alerts;
mod error;
pub mod experiments;
pub mod guardrails;
pub mod holdout;
pub mod layers;
pub mod lifecycle;
pub mod permissions;
pub mod power;
pub mod registry;
pub mod results;

pub use actor::{Actor, SystemActor};
pub use admin::AdminService;
pub use alerts::{Alert, AlertService};
pub use error::ServiceError;
pub use experiments::{
    ActParams, ExperimentFilter, ExperimentPage, ExperimentService, Lookup, LookupRow,
};
pub use guardrails::GuardrailService;
pub use holdout::{HoldoutImpact, HoldoutService};
pub use layers::LayerService;
pub use lifecycle::Action;
pub use power::PowerService;
pub use registry::{holdout_due, HoldoutChange, RegistryService, MAX_ROTATION_DAYS};
pub use results::{LatestLook, Publication, PublishTarget, ResultsService};
