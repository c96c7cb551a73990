//! Integration tests of the `strata` binary: real processes, real files.

mod assign;
mod conformance;
