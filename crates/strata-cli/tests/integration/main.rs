//! Integration tests of the `strata` binary: real processes, real files.

mod analyze;
mod assign;
mod conformance;
mod serve;
