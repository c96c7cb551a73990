//! Integration tests of strata-sdk: fail open against a misbehaving control
//! plane, shipping to a misbehaving collector and to the real ingestion
//! service, the real server, and consistency with the engine and the server.

mod collector;
mod common;
mod consistency;
mod fail_open;
mod pipeline;
mod real;
mod sticky;
