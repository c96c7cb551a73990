//! HTTP plumbing shared by Strata's services.
//!
//! `strata serve` runs the control plane (strata-server) and the collection
//! endpoints (strata-pipeline) in one process; they answer clients the same
//! way, so what they share lives here once instead of twice:
//!
//! - [`AppError`] — the one error type, rendered as
//!   `{"error": {"code", "message", "field"}}`, with `Retry-After` on 429/503;
//! - [`body`] — request bodies read with a limit and drained before a 413;
//! - [`limit`] — token-bucket rate limits per key in bounded memory;
//! - [`prometheus`] — latency histograms and label escaping for `/metrics`.
//!
//! Architecture invariant: this crate knows no Strata domain type (no
//! experiment, no record); it depends on no other workspace crate, so both
//! planes can use it without depending on each other.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod body;
mod error;
pub mod limit;
pub mod prometheus;

pub use error::{retry_after_header, retry_after_secs, AppError};
