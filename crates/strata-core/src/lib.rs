//! Strata's assignment engine.
