//! Integration tests of `strata serve`: each starts the real server on an
//! ephemeral loopback port and drives it over HTTP. Every test in the
//! `on_both_backends!` lists runs against SQLite and against PostgreSQL
//! (when `STRATA_TEST_DATABASE_URL` is set; otherwise those print SKIPPED).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

mod activation;
mod alerts;
mod auth;
mod bad_input;
mod distribution;
mod layers;
mod lifecycle;
mod multi_instance;
mod registry;
mod results;
mod service;
mod validation;
