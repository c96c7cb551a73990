//! The operations of the control plane, callable in-process without HTTP.
//!
//! The management API is the one caller of these services today; they take
//! an [`Actor`] rather than a request so that a job inside the server can
//! call them as a system actor (the integration tests do). Every operation checks the caller's permissions against the one
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
