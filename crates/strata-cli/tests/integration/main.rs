//! Integration tests of the `strata` binary: real processes, real files.

mod analyze;
mod architecture;
mod assign;
#[cfg(feature = "ballista")]
mod ballista;
mod collect_analyze;
mod conformance;
mod consistency;
mod crash;
mod demo;
mod guardrails;
mod holdout;
mod identity;
mod jetstream;
mod leader;
mod roles;
mod scheduled;
mod serve;
