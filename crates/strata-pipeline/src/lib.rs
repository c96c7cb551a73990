//! Strata's data-collection plane: exposures and behavioural events in over
//! HTTP, out as partitioned Parquet that strata-analysis reads.
//!
//! "Lost exposures corrupt the experiment denominator": a record the pipeline
//! acknowledged is never lost, and a retried one never counts twice. The
//! pieces, in data-flow order:
//!
//! 1. Ingestion: parse and validate batches, deduplicate, limit, answer.
//! 2. A [`Sink`] that makes records durable before the acknowledgement: the
//!    embedded segment log on local disk ([`LocalStore`]), or a NATS
//!    JetStream stream that several nodes publish to ([`StreamStore`]).
//! 3. Compaction of durable records into Parquet partitioned by kind, UTC
//!    date and a user partition (a hash independent of the assignment hash).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod batch;
pub mod catalog;
pub mod codec;
pub mod compact;
pub mod dedup;
pub mod delete;
pub mod error;
pub mod http;
pub use strata_http::limit as limits;
pub mod lock;
pub mod log;
pub mod memory;
pub mod merge;
pub mod metrics;
pub mod mirror;
pub mod nats;
pub mod parquet;
pub mod parse;
pub mod partition;
pub mod record;
pub mod retention;
pub mod store;
pub mod stream_store;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use batch::Batch;
pub use catalog::{Catalog, CatalogEntry, Experiments};
pub use compact::CompactionReport;
pub use delete::DeletionReport;
pub use error::StoreError;
pub use lock::{lock_dir, LockError};
pub use merge::{MergeOptions, MergeReport};
pub use mirror::{Mirror, MirrorReport};
pub use partition::user_partition;
pub use record::{Alias, Event, Exposure, Kind, Record};
pub use retention::{RetentionPolicy, RetentionReport};
pub use store::{LocalStore, ReadLease, StoreOptions};
pub use stream_store::{CompactGate, StreamStore, StreamStoreOptions};

/// A boxed future, so that [`Sink`] and [`Authorizer`] can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happened to one record of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored durably.
    Accepted,
    /// Already stored earlier (same `event_id`, or same unit, experiment and
    /// UTC day for an exposure); not stored again.
    Duplicate,
}

/// Why a sink could not take a batch. Nothing of a failed batch is
/// acknowledged, so the client retries it whole; deduplication makes the
/// retry safe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The durable store failed (disk, fsync, stream).
    #[error("durable store: {0}")]
    Io(String),
    /// The sink is overloaded or shutting down; retry later.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// A hint for `Retry-After`.
        retry_after: Duration,
    },
}

/// Load figures of a sink, for backpressure and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// Bytes durable but not yet compacted into Parquet.
    pub backlog_bytes: u64,
    /// Age of the oldest record not yet compacted.
    pub compaction_lag: Option<Duration>,
    /// Free bytes on the volume of the data directory, when known.
    pub disk_free_bytes: Option<u64>,
}

/// Where acknowledged records go.
pub trait Sink: Send + Sync + 'static {
    /// Appends `records` durably and returns one outcome per record, in
    /// order. Resolves only once every accepted record is durable (fsync'd to
    /// the log, or acknowledged by JetStream); an error means none of the
    /// batch may be acknowledged.
    fn append(&self, records: Batch) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>>;

    /// Current load figures.
    fn pressure(&self) -> Pressure;
}

/// The holder of an ingestion key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id of the key (for per-key limits and logs; never the token).
    pub key_id: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDenied {
    /// No such token, or revoked: 401.
    Unauthenticated,
    /// A valid token of a kind that may not ingest: 403.
    Forbidden(String),
}

/// Checks ingestion bearer tokens; `strata serve` implements it over its key
/// store, tests with a fixed token.
pub trait Authorizer: Send + Sync + 'static {
    /// The principal of `token`, or why it is refused.
    fn authorize<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthDenied>>;
}
