//! Strata's in-process SDK: the client that application servers embed.
//!
//! A [`Client`] evaluates assignments in memory with `strata-core` — no
//! network call on the hot path — keeps its config snapshot fresh by pull
//! (`GET /sdk/v1/config` with `If-None-Match`) and push (`GET /sdk/v1/stream`,
//! Server-Sent Events), logs exposures and behavioural events asynchronously
//! in gzip batches to the collector, and fails open in every failure mode: a
//! caller always gets an answer, the default when nothing better is known.
//!
//! ```no_run
//! # async fn run() {
//! use strata_sdk::{Client, Context};
//!
//! let client = Client::builder("http://127.0.0.1:8080", "sdk-key")
//!     .ingest_key("ingest-key")
//!     .build()
//!     .expect("a tokio runtime and a valid url");
//! client.ready(std::time::Duration::from_secs(2)).await;
//! let ctx = Context::for_user("user-42");
//! let v = client.variant(&ctx, "checkout_flow", "control");
//! println!("serve {v}");
//! client.shutdown(std::time::Duration::from_secs(5)).await;
//! # }
//! ```
//!
//! The behaviour every SDK of the platform reproduces (freshness, the
//! fail-open matrix, exposure semantics, buffering and drops) is specified in
//! `docs/sdk.md`.
//!
//! Architecture invariants: no public method panics into the host or returns
//! an error on the hot path; `variant`, `assignments` and `track` never wait
//! on the network or on a lock held across I/O; the snapshot is replaced by
//! an atomic pointer swap, so readers never block writers or each other.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod backoff;
mod blocking;
mod buffer;
mod builder;
mod client;
mod config;
mod dedup;
mod error;
mod hooks;
mod ship;
mod sse;
mod state;
pub mod sticky;
mod variant;

pub use blocking::BlockingClient;
pub use builder::ClientBuilder;
pub use client::{AssignedExperiment, Assignments, Client, ShutdownReport};
pub use error::BuildError;
pub use hooks::{ConfigSource, DropReason, Hooks, RecordKind, SdkEvent, Stats};
#[cfg(feature = "redis")]
pub use sticky::RedisStickyStore;
pub use sticky::{MemoryStickyStore, StickyAssignment, StickyStore, StickyStoreError};
pub use strata_core::Context;
pub use uuid::Uuid;
pub use variant::{Reason, Variant};
