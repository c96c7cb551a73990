//! The config store: definitions, published snapshots, the audit log and API
//! keys, in SQLite (embedded default) or PostgreSQL.
//!
//! Both backends run the same portable SQL and the same migration set through
//! sqlx's `Any` driver; a [`Backend`] (module [`crate::backend`]) supplies the
//! few pieces that differ (WAL mode on SQLite, `pg_notify` and `LISTEN` on
//! PostgreSQL).
//!
//! Every change runs in a [`WriteTx`]: it first bumps `config_head.version`
//! (which locks the row and so serialises writers across instances), applies
//! the change with optimistic concurrency (`revision`), appends to the audit
//! log, builds and validates the new snapshot with strata-core, stores it and
//! commits — all in one transaction. If any step fails nothing is written.
//!
//! This module opens the store (pool, backend, migrations) and holds what
//! every part shares: the error type and the JSON form of stored documents.
//! The parts, one job each:
//!
//! - `read` — experiments, definitions and snapshots, by the same queries
//!   from the pool and inside a change;
//! - `tx` — [`WriteTx`], the one write path for config, ending in publish
//!   and commit;
//! - `audit` — the append-only audit log and its query;
//! - `results` — published analysis results: publish, history, retract;
//! - `guardrails` — the guardrail monitor's evaluations and their reviews;
//! - `keys` — API keys, stored by the hash of their token;
//! - `sticky` — sticky assignments kept for remote evaluation;
//! - `time` — the timestamps the store keeps (ms) and shows (RFC 3339).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;

mod alerts;
mod audit;
mod guardrails;
mod holdout;
mod keys;
mod leases;
mod read;
mod results;
mod runs;
mod sticky;
mod time;
mod tx;

pub use crate::backend::{Backend, ChangeListener, NOTIFY_CHANNEL};
pub use alerts::{Attempt, Delivery, Webhook};
pub use audit::{AuditEntry, AuditQuery};
pub use guardrails::EvaluationRecord;
pub use keys::KeyRecord;
pub use read::{ExperimentSelect, StoredSnapshot};
pub use results::{NewLook, ResultsMeta};
pub use time::{now_ms, parse_rfc3339, rfc3339};
pub use tx::WriteTx;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("{0}")]
    Corrupt(String),
    /// A uniqueness or revision conflict.
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict("the entity already exists".to_owned());
            }
        }
        StoreError::Unavailable(e.to_string().to_lowercase())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migration failed: {e}"))
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The migration set, embedded in the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "results",
        include_str!("../../migrations/0002_results.sql"),
    ),
    (
        3,
        "results_retraction",
        include_str!("../../migrations/0003_results_retraction.sql"),
    ),
    (
        4,
        "results_summary",
        include_str!("../../migrations/0004_results_summary.sql"),
    ),
    (
        5,
        "analysis_runs",
        include_str!("../../migrations/0005_analysis_runs.sql"),
    ),
    (
        6,
        "alerts",
        include_str!("../../migrations/0006_alerts.sql"),
    ),
    (
        7,
        "guardrail_evaluations",
        include_str!("../../migrations/0007_guardrail_evaluations.sql"),
    ),
    (
        8,
        "sticky_assignments",
        include_str!("../../migrations/0008_sticky_assignments.sql"),
    ),
    (
        9,
        "holdout_periods",
        include_str!("../../migrations/0009_holdout_periods.sql"),
    ),
    (
        10,
        "job_leases",
        include_str!("../../migrations/0010_job_leases.sql"),
    ),
];

/// Who made a change (for the audit log): one type with the services.
pub use crate::service::Actor;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory of the SQLite file (when no database URL is given).
    pub data_dir: PathBuf,
    /// `postgres://…` (or `sqlite://…`) URL; overrides `data_dir`.
    pub database_url: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Published snapshots kept for rollback: the latest N versions (0 = all).
    pub snapshot_retention: u64,
}

/// The config store.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    pool: AnyPool,
    backend: Arc<dyn Backend>,
    retention: u64,
    /// Serialises this instance's writers (SQLite allows one writer at a time;
    /// across instances the `config_head` row lock does the same).
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| corrupt("serialise", e))
}

fn from_json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

impl ConfigStore {
    /// Connects (creating the SQLite file and directory if needed) and runs the migrations.
    pub async fn open(opts: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend: Arc<dyn Backend> = crate::backend::open(opts)?.into();
        let options = crate::backend::connect_options(&*backend)?;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        backend.prepare(&pool).await?;
        let migrator = Migrator {
            migrations: Cow::Owned(
                MIGRATIONS
                    .iter()
                    .map(|(v, d, sql)| {
                        Migration::new(
                            *v,
                            Cow::Borrowed(*d),
                            MigrationType::Simple,
                            Cow::Borrowed(*sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            retention: opts.snapshot_retention,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Subscribes to versions published by other instances (`None`: poll).
    pub async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>> {
        self.backend.listen().await
    }

    /// Closes every connection; later operations fail with [`StoreError::Unavailable`].
    /// Used to simulate an outage in tests.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
