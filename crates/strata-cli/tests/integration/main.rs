//! Integration tests of the `strata` binary: real processes, real files.

mod analyze;
mod assign;
mod collect_analyze;
mod conformance;
mod crash;
mod serve;
