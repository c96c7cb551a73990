//! Strata's assignment engine: a pure function from (unit, context, config
//! snapshot) to variant assignments.
//!
//! The pieces, in data-flow order:
//!
//! 1. [`Snapshot`] — the immutable, versioned JSON config the server publishes.
//! 2. [`CompiledSnapshot::compile`] — validates it once (overlapping layer
//!    ranges, zero weights, unknown layers, malformed targeting …) and
//!    precomputes everything that does not depend on the unit, including an
//!    index of experiments by surface. It serves the experiments for which
//!    [`Experiment::is_servable`] holds, and checks targeting with the
//!    compiler behind [`targeting::validate`].
//! 3. [`CompiledSnapshot::evaluate`] — per request: global holdout, surface
//!    pre-filter, targeting, layer range, ramp, variant. It *returns* the
//!    decisions, including whether each should be logged as an exposure; the
//!    caller (SDK, server, CLI) decides what to log.
//! 4. [`CompiledSnapshot::explain`] — the same evaluation, reporting for
//!    every experiment of the snapshot whether it assigns the unit and, if
//!    not, why ([`Outcome`]): for support tools, not for serving.
//!
//! Bucketing is MurmurHash3 x86 32-bit over `unit_id ++ ":" ++ salt`, modulo
//! 1000 ([`hash`]). The exact rules are in `docs/assignment-spec.md` and are
//! frozen by the language-neutral suite under `testdata/assignment/`.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and uses no
//! randomness. The same inputs give the same answer on every machine, forever.
//! Evaluation never panics: bad snapshots are rejected at compile time, and a
//! caller without a usable snapshot evaluates [`CompiledSnapshot::empty`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bots;
mod context;
mod engine;
mod error;
mod explain;
pub mod hash;
pub mod snapshot;
pub mod sticky;
pub mod targeting;

pub use context::{Context, NotAnObject, OPTED_OUT_ATTR};
pub use engine::{
    unit_text, Assignment, CompiledSnapshot, HoldoutExposure, HOLDOUT_EXPERIMENT, HOLDOUT_VARIANT,
    REST_VARIANT,
};
pub use error::SnapshotError;
pub use explain::{Explanation, Outcome};
pub use snapshot::{Experiment, Holdout, Layer, Snapshot, Status, Variant};
pub use sticky::{StickyAssignment, StickyEntry, StickyEvaluation, StickyLookup, StickyMap};
