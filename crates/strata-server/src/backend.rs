//! The two databases behind the config store, behind one trait.
//!
//! Everything the store does is portable SQL through sqlx's `Any` driver with
//! one migration set; a [`Backend`] supplies only what genuinely differs:
//! how to connect, per-connection set-up, how a commit is announced to other
//! instances and how to hear about theirs.
//!
//! - [`Sqlite`]: an embedded file under the data directory, in WAL mode. One
//!   process owns it, so there is nobody to announce commits to; the store's
//!   poll of the head version is enough.
//! - [`Postgres`]: a server shared by several stateless instances. A commit
//!   sends `pg_notify` inside its transaction (delivered only if it commits),
//!   and each instance `LISTEN`s, so a kill on one instance reaches SDKs
//!   connected to any other within milliseconds.

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AnyPool};

use crate::store::{redact, StoreError, StoreOptions};

/// A boxed future, so that [`Backend`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The PostgreSQL channel on which commits are announced.
pub const NOTIFY_CHANNEL: &str = "strata_config";

/// What differs between the databases the config store runs on.
pub trait Backend: Send + Sync + Debug + 'static {
    /// `sqlite` or `postgres`, for logs and `/metrics`.
    fn name(&self) -> &'static str;

    /// The connection URL (password redacted by [`redact`] before logging).
    fn url(&self) -> &str;

    /// Prepares the database before the migrations run.
    fn prepare<'a>(&'a self, pool: &'a AnyPool) -> BoxFuture<'a, Result<()>>;

    /// Announces, inside the committing transaction, that `version` was published.
    fn announce<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        version: u64,
    ) -> BoxFuture<'a, Result<()>>;

    /// A subscription to versions published by other instances, or `None`
    /// when the backend has no such channel (then the head version is polled).
    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>>>;
}

/// Announcements of versions published by other instances.
pub trait ChangeListener: Send {
    /// Resolves at the next announcement; an error means the subscription is
    /// lost (the caller falls back to polling and re-subscribes later).
    fn changed(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// Picks the backend for `opts`: PostgreSQL for a `postgres://` URL, SQLite
/// for a `sqlite:` URL or, without a URL, the file `strata.db` under the data
/// directory (created if needed).
pub fn open(opts: &StoreOptions) -> Result<Box<dyn Backend>> {
    match &opts.database_url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Box::new(Postgres { url: u.clone() }))
        }
        Some(u) if u.starts_with("sqlite:") => Ok(Box::new(Sqlite {
            url: u.clone(),
            file: None,
        })),
        Some(u) => Err(StoreError::Unavailable(format!(
            "unsupported database url {:?}; expected postgres:// or sqlite:",
            redact(u)
        ))),
        None => {
            std::fs::create_dir_all(&opts.data_dir).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create data directory {}: {e}",
                    opts.data_dir.display()
                ))
            })?;
            let file = opts.data_dir.join("strata.db");
            Ok(Box::new(Sqlite {
                url: sqlite_url(&file),
                file: Some(file),
            }))
        }
    }
}

/// Parses a backend's URL into connect options.
pub fn connect_options(backend: &dyn Backend) -> Result<AnyConnectOptions> {
    backend
        .url()
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The embedded backend: one SQLite file.
#[derive(Debug, Clone)]
pub struct Sqlite {
    url: String,
    file: Option<PathBuf>,
}

impl Sqlite {
    /// The database file, when opened from a data directory.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn prepare<'a>(&'a self, pool: &'a AnyPool) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Readers (the SDK refresh path) never wait for the writer.
            sqlx::query("PRAGMA journal_mode=WAL").execute(pool).await?;
            Ok(())
        })
    }

    fn announce<'a>(&'a self, _: &'a mut AnyConnection, _: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>>> {
        Box::pin(async { Ok(None) })
    }
}

/// The shared backend: a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn prepare<'a>(&'a self, _: &'a AnyPool) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn announce<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        version: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(version.to_string())
                .fetch_optional(conn)
                .await?;
            Ok(())
        })
    }

    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>>> {
        Box::pin(async move {
            let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok(Some(Box::new(PgChanges(l)) as Box<dyn ChangeListener>))
        })
    }
}

struct PgChanges(sqlx::postgres::PgListener);

impl ChangeListener for PgChanges {
    fn changed(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.0.recv().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: Option<&str>, dir: &Path) -> StoreOptions {
        StoreOptions {
            data_dir: dir.to_path_buf(),
            database_url: url.map(str::to_owned),
            max_connections: 2,
            snapshot_retention: 0,
        }
    }

    #[test]
    fn the_url_picks_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(&opts(None, &dir.path().join("d"))).unwrap();
        assert_eq!(b.name(), "sqlite");
        assert!(b.url().ends_with("strata.db?mode=rwc"));
        assert!(dir.path().join("d").is_dir());
        let b = open(&opts(Some("postgresql://u@h/db"), dir.path())).unwrap();
        assert_eq!(b.name(), "postgres");
        let b = open(&opts(Some("sqlite::memory:"), dir.path())).unwrap();
        assert_eq!(b.name(), "sqlite");
        let e = open(&opts(Some("mysql://u:secret@h/db"), dir.path())).unwrap_err();
        assert!(e.to_string().contains("mysql://u:***@h/db"), "{e}");
        assert!(!e.to_string().contains("secret"));
    }
}
