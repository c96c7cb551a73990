//! Integration tests of strata-pipeline: one test binary, one module per area.

mod common;
mod ingest_common;
mod ingest_http;
mod ingest_store;
mod store_lifecycle;
mod store_log;
mod store_merge;
mod store_partition;
