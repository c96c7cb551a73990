//! Integration tests of strata-pipeline: one test binary, one module per area.

mod common;
mod ingest_http;
