//! Integration tests of strata-core, one binary with a module per area.

mod common;
mod conformance;
mod distribution;
mod explain;
mod properties;
mod validation;
