//! Integration tests of strata-pipeline: one test binary, one module per area.

mod ingest_common;
mod ingest_http;
