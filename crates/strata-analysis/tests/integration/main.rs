//! Integration tests of strata-analysis, one module per area.

mod aliases;
mod bots;
mod checks;
mod common;
mod dataset;
mod errors;
mod exact;
mod formats;
mod fused;
mod holdout;
mod monitor;
mod output;
mod planted;
mod rollup;
mod schema;
mod sequential;
mod slices;
