//! Integration tests of `strata-stats`: reference fixtures, published tables,
//! calibration by simulation and numerical stability. One test binary keeps
//! link times down; each area is a module.

#[path = "integration/prec.rs"]
mod prec;

#[path = "integration/calibration.rs"]
mod calibration;
#[path = "integration/guardrail.rs"]
mod guardrail;
#[path = "integration/published_tables.rs"]
mod published_tables;
#[path = "integration/reference.rs"]
mod reference;
#[path = "integration/robustness.rs"]
mod robustness;
