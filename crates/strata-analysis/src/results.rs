//! The results document (`docs/results-schema.md`, `docs/results.schema.json`).
//!
//! The types live in `strata-model` so that the control plane, which stores
//! published documents, checks the same document this crate writes.

pub use strata_model::results::*;
