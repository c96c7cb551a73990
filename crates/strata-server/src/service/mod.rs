//! The operations of the control plane, callable in-process without HTTP.
//!
//! The management API is one caller of these services; background jobs
//! inside the server (a scheduler, the guardrail monitor, a portal) are
//! others. Every operation checks the caller's permissions against the one
//! table of [`permissions`], applies the lifecycle of [`lifecycle`], writes
//! through the store with an audit entry under the caller's name, and
//! refuses with a [`ServiceError`] that the API turns into its HTTP error.

mod actor;
mod error;
pub mod experiments;
pub mod lifecycle;
pub mod permissions;

pub use actor::{Actor, SystemActor};
pub use error::ServiceError;
pub use experiments::{ActParams, ExperimentService};
pub use lifecycle::Action;
