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

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row, Transaction};

pub use crate::backend::{Backend, ChangeListener, NOTIFY_CHANNEL};
use crate::live::{Disabled, LiveConfig, SnapshotExtra};
use crate::model::{ExperimentRecord, HoldoutRecord, LayerRecord};

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
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "results", include_str!("../migrations/0002_results.sql")),
    (
        3,
        "results_retraction",
        include_str!("../migrations/0003_results_retraction.sql"),
    ),
];

/// Who made a change (for the audit log): one type with the services.
pub use crate::service::Actor;

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number, increasing.
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// Token name.
    pub actor: String,
    /// Token id.
    pub actor_key: String,
    /// What happened, e.g. `experiment.start`, `denied`.
    pub action: String,
    /// `experiment`, `layer`, `metric`, `guardrail`, `holdout`, `config`, `key`, `request`.
    pub entity_type: String,
    /// The entity's key.
    pub entity_key: String,
    /// Config version published by the change.
    pub version: Option<i64>,
    /// The entity before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The entity after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// Extra detail (a kill reason, a denied permission).
    pub detail: Option<String>,
}

/// Filters of the audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Entity type.
    pub entity_type: Option<String>,
    /// Entity key.
    pub entity_key: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Entries with `seq` below this.
    pub before_seq: Option<i64>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyRecord {
    /// Id.
    pub id: String,
    /// `api`, `sdk` or `ingest`.
    pub kind: String,
    /// Role of an `api` key (`admin`, `experimenter`, `analyst`, `viewer`).
    pub role: String,
    /// Team.
    pub team: String,
    /// Display name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Whether revoked.
    pub revoked: bool,
}

/// A stored snapshot.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// Version.
    pub version: u64,
    /// The JSON body SDKs receive.
    pub body: String,
    /// The server-side extras (disabled flags).
    pub extra: String,
    /// RFC 3339.
    pub created_at: String,
    /// Who published it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// One publication of an experiment's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResultsMeta {
    /// Sequence number of the publication.
    pub seq: u64,
    /// The `as_of` of the analysis (RFC 3339).
    pub as_of: String,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// The key name that published it.
    pub published_by: String,
    /// When it was retracted (RFC 3339), if it was: a retracted look stays
    /// in the history but is never the latest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retracted_at: Option<String>,
    /// The key name that retracted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retracted_by: Option<String>,
    /// Why it was retracted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retract_reason: Option<String>,
}

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 (UTC, millisecond precision) of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    Some(
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_millis(),
    )
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

    /// Starts a change: takes the writer lock and bumps the config version.
    pub async fn begin_write(&self, actor: &Actor) -> Result<WriteTx> {
        let guard = self.write_lock.clone().lock_owned().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE config_head SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get(0)?;
        Ok(WriteTx {
            tx,
            version: u64::try_from(version).unwrap_or(0),
            now: now_ms(),
            actor: actor.clone(),
            backend: self.backend.clone(),
            retention: self.retention,
            _guard: guard,
        })
    }

    /// The latest published version (0 if none).
    pub async fn head_version(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM snapshots")
            .fetch_one(&self.pool)
            .await?;
        let v: i64 = row.try_get(0)?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// A stored snapshot.
    pub async fn snapshot(&self, version: u64) -> Result<Option<StoredSnapshot>> {
        let mut c = self.conn().await?;
        load_snapshot(&mut c, version).await
    }

    /// One experiment (soft-deleted ones are not found).
    pub async fn experiment(&self, key: &str) -> Result<Option<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_experiment(&mut c, key).await
    }

    /// Every experiment that is not soft-deleted, oldest first.
    pub async fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_experiments(&mut c).await
    }

    /// The experiments of one layer.
    pub async fn experiments_in_layer(&self, layer: &str) -> Result<Vec<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_layer_experiments(&mut c, layer).await
    }

    /// A definition (`layer`, `metric`, `guardrail`, `holdout`).
    pub async fn definition<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let mut c = self.conn().await?;
        load_definition(&mut c, kind, key).await
    }

    /// Every definition of a kind.
    pub async fn definitions<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        let mut c = self.conn().await?;
        load_definitions(&mut c, kind).await
    }

    /// Audit log entries, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT seq, at, actor, actor_key, action, entity_type, entity_key, version, before_doc, after_doc, detail FROM audit_log WHERE 1 = 1",
        );
        let mut args: Vec<String> = Vec::new();
        for (col, v) in [
            ("entity_type", &q.entity_type),
            ("entity_key", &q.entity_key),
            ("action", &q.action),
        ] {
            if let Some(v) = v {
                args.push(v.clone());
                sql.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        if let Some(b) = q.before_seq {
            sql.push_str(&format!(" AND seq < {b}"));
        }
        sql.push_str(&format!(
            " ORDER BY seq DESC LIMIT {}",
            q.limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = query.bind(a.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let parse = |s: Option<String>| -> Result<Option<Value>> {
                    s.map(|s| from_json("audit document", &s)).transpose()
                };
                Ok(AuditEntry {
                    seq: r.try_get(0)?,
                    at: rfc3339(r.try_get(1)?),
                    actor: r.try_get(2)?,
                    actor_key: r.try_get(3)?,
                    action: r.try_get(4)?,
                    entity_type: r.try_get(5)?,
                    entity_key: r.try_get(6)?,
                    version: r.try_get(7)?,
                    before: parse(r.try_get(8)?)?,
                    after: parse(r.try_get(9)?)?,
                    detail: r.try_get(10)?,
                })
            })
            .collect()
    }

    /// Appends one audit entry outside a config change (denied requests, key creation).
    pub async fn audit_event(
        &self,
        actor: &Actor,
        action: &str,
        entity_type: &str,
        entity_key: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        insert_audit(
            &mut tx,
            now_ms(),
            actor,
            action,
            entity_type,
            entity_key,
            None,
            None,
            None,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a published results document of `experiment` and audits it.
    /// Returns its sequence number.
    pub async fn insert_results(
        &self,
        experiment: &str,
        owner_team: &str,
        as_of: i64,
        doc: &Value,
        actor: &Actor,
    ) -> Result<u64> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE counters SET value = value + 1 WHERE name = 'results' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        let seq: i64 = row.try_get(0)?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO results (seq, experiment, owner_team, as_of, published_at, published_by, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(seq)
        .bind(experiment)
        .bind(owner_team)
        .bind(as_of)
        .bind(now)
        .bind(actor.audit_name())
        .bind(to_json(doc)?)
        .execute(&mut *tx)
        .await?;
        let detail = format!("seq {seq}, as of {}", rfc3339(as_of));
        insert_audit(
            &mut tx,
            now,
            actor,
            "results.publish",
            "experiment",
            experiment,
            None,
            None,
            None,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// The publications of `experiment`'s results, latest `as_of` first
    /// (documents not loaded).
    pub async fn results_history(&self, experiment: &str) -> Result<Vec<ResultsMeta>> {
        let rows = sqlx::query(
            "SELECT seq, as_of, published_at, published_by, retracted_at, retracted_by, retract_reason FROM results WHERE experiment = $1 ORDER BY as_of DESC, seq DESC",
        )
        .bind(experiment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(results_meta).collect()
    }

    /// Retracts publication `seq` of `experiment` with a reason and audits
    /// it (`results.retract`). `Ok(false)` when there is no such publication;
    /// retracting a retracted look again is refused by the caller.
    pub async fn retract_results(
        &self,
        experiment: &str,
        seq: u64,
        reason: &str,
        actor: &Actor,
    ) -> Result<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE results SET retracted_at = $1, retracted_by = $2, retract_reason = $3 WHERE experiment = $4 AND seq = $5 AND retracted_at IS NULL",
        )
        .bind(now)
        .bind(actor.audit_name())
        .bind(reason)
        .bind(experiment)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let detail = format!("seq {seq}: {reason}");
        insert_audit(
            &mut tx,
            now,
            actor,
            "results.retract",
            "experiment",
            experiment,
            None,
            None,
            None,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One publication (`seq`), or the latest by `as_of` when `seq` is `None`
    /// (retracted publications are never the latest).
    pub async fn results(
        &self,
        experiment: &str,
        seq: Option<u64>,
    ) -> Result<Option<(ResultsMeta, Value)>> {
        let q = match seq {
            Some(seq) => sqlx::query(
                "SELECT seq, as_of, published_at, published_by, retracted_at, retracted_by, retract_reason, doc FROM results WHERE experiment = $1 AND seq = $2",
            )
            .bind(experiment)
            .bind(i64::try_from(seq).unwrap_or(i64::MAX)),
            None => sqlx::query(
                "SELECT seq, as_of, published_at, published_by, retracted_at, retracted_by, retract_reason, doc FROM results WHERE experiment = $1 AND retracted_at IS NULL ORDER BY as_of DESC, seq DESC LIMIT 1",
            )
            .bind(experiment),
        };
        let Some(r) = q.fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let doc: Value = from_json("results", &r.try_get::<String, _>(7)?)?;
        Ok(Some((results_meta(&r)?, doc)))
    }

    /// Stores a new API key (by hash) and audits it.
    pub async fn insert_key(&self, key: &KeyRecord, token_hash: &str, actor: &Actor) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_keys (id, token_hash, kind, role, team, name, created_at, created_by, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(key.id.as_str())
        .bind(token_hash)
        .bind(key.kind.as_str())
        .bind(key.role.as_str())
        .bind(key.team.as_str())
        .bind(key.name.as_str())
        .bind(now)
        .bind(key.created_by.as_str())
        .execute(&mut *tx)
        .await?;
        let after = serde_json::to_value(key).ok();
        insert_audit(
            &mut tx,
            now,
            actor,
            "key.create",
            "key",
            &key.id,
            None,
            None,
            after.as_ref(),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts a key unless one with the same hash exists (bootstrap token).
    pub async fn ensure_key(&self, key: &KeyRecord, token_hash: &str) -> Result<()> {
        if self.key_by_hash(token_hash).await?.is_some() {
            return Ok(());
        }
        match self.insert_key(key, token_hash, &Actor::server()).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The key with this token hash, unless revoked.
    pub async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT id, kind, role, team, name, created_at, created_by, revoked FROM api_keys WHERE token_hash = $1 AND revoked = 0",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    /// Every key (no hashes).
    pub async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, role, team, name, created_at, created_by, revoked FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Every active key with its token hash (to warm the in-memory cache).
    pub async fn active_keys(&self) -> Result<Vec<(String, KeyRecord)>> {
        let rows = sqlx::query(
            "SELECT id, kind, role, team, name, created_at, created_by, revoked, token_hash FROM api_keys WHERE revoked = 0",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(8)?, key_from_row(r)?)))
            .collect()
    }

    /// Revokes a key; true when it existed.
    pub async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE api_keys SET revoked = 1 WHERE id = $1 AND revoked = 0")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            insert_audit(
                &mut tx,
                now_ms(),
                actor,
                "key.revoke",
                "key",
                id,
                None,
                None,
                None,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}

fn results_meta(r: &sqlx::any::AnyRow) -> Result<ResultsMeta> {
    Ok(ResultsMeta {
        seq: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
        as_of: rfc3339(r.try_get(1)?),
        published_at: rfc3339(r.try_get(2)?),
        published_by: r.try_get(3)?,
        retracted_at: r.try_get::<Option<i64>, _>(4)?.map(rfc3339),
        retracted_by: r.try_get(5)?,
        retract_reason: r.try_get(6)?,
    })
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        role: r.try_get(2)?,
        team: r.try_get(3)?,
        name: r.try_get(4)?,
        created_at: rfc3339(r.try_get(5)?),
        created_by: r.try_get(6)?,
        revoked: r.try_get::<i64, _>(7)? != 0,
    })
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

async fn load_snapshot(c: &mut AnyConnection, version: u64) -> Result<Option<StoredSnapshot>> {
    let v = i64::try_from(version).unwrap_or(i64::MAX);
    let row = sqlx::query(
        "SELECT version, body, extra, created_at, actor, reason FROM snapshots WHERE version = $1",
    )
    .bind(v)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| {
        Ok(StoredSnapshot {
            version: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
            body: r.try_get(1)?,
            extra: r.try_get(2)?,
            created_at: rfc3339(r.try_get(3)?),
            actor: r.try_get(4)?,
            reason: r.try_get(5)?,
        })
    })
    .transpose()
}

async fn load_experiment(c: &mut AnyConnection, key: &str) -> Result<Option<ExperimentRecord>> {
    let row = sqlx::query("SELECT doc FROM experiments WHERE key = $1 AND deleted = 0")
        .bind(key)
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .transpose()
}

async fn load_experiments(c: &mut AnyConnection) -> Result<Vec<ExperimentRecord>> {
    let rows =
        sqlx::query("SELECT doc FROM experiments WHERE deleted = 0 ORDER BY created_at, key")
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .collect()
}

async fn load_definitions<T: DeserializeOwned>(
    c: &mut AnyConnection,
    kind: &str,
) -> Result<Vec<T>> {
    let rows = sqlx::query(
        "SELECT doc FROM definitions WHERE kind = $1 AND deleted = 0 ORDER BY created_at, key",
    )
    .bind(kind)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| from_json(kind, &r.try_get::<String, _>(0)?))
        .collect()
}

async fn load_layer_experiments(
    c: &mut AnyConnection,
    layer: &str,
) -> Result<Vec<ExperimentRecord>> {
    let rows = sqlx::query(
        "SELECT doc FROM experiments WHERE layer = $1 AND deleted = 0 ORDER BY created_at, key",
    )
    .bind(layer)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .collect()
}

async fn load_definition<T: DeserializeOwned>(
    c: &mut AnyConnection,
    kind: &str,
    key: &str,
) -> Result<Option<T>> {
    let row =
        sqlx::query("SELECT doc FROM definitions WHERE kind = $1 AND key = $2 AND deleted = 0")
            .bind(kind)
            .bind(key)
            .fetch_optional(&mut *c)
            .await?;
    row.map(|r| from_json(kind, &r.try_get::<String, _>(0)?))
        .transpose()
}

#[allow(clippy::too_many_arguments, reason = "one row of the audit table")]
async fn insert_audit(
    c: &mut AnyConnection,
    at: i64,
    actor: &Actor,
    action: &str,
    entity_type: &str,
    entity_key: &str,
    version: Option<u64>,
    before: Option<&Value>,
    after: Option<&Value>,
    detail: Option<&str>,
) -> Result<()> {
    let row =
        sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'audit' RETURNING value")
            .fetch_one(&mut *c)
            .await?;
    let seq: i64 = row.try_get(0)?;
    let before = before.map(to_json).transpose()?;
    let after = after.map(to_json).transpose()?;
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, actor_key, action, entity_type, entity_key, version, before_doc, after_doc, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(seq)
    .bind(at)
    .bind(actor.audit_name())
    .bind(actor.audit_key())
    .bind(action)
    .bind(entity_type)
    .bind(entity_key)
    .bind(version.and_then(|v| i64::try_from(v).ok()))
    .bind(before)
    .bind(after)
    .bind(detail)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// One config change in progress. Dropping it without [`commit`](Self::commit)
/// rolls everything back, including the version bump.
pub struct WriteTx {
    tx: Transaction<'static, sqlx::Any>,
    /// The version this change will publish.
    pub version: u64,
    /// The change's timestamp (ms).
    pub now: i64,
    actor: Actor,
    backend: Arc<dyn Backend>,
    retention: u64,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("version", &self.version)
            .finish()
    }
}

impl WriteTx {
    /// The actor of this change.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// One experiment.
    pub async fn experiment(&mut self, key: &str) -> Result<Option<ExperimentRecord>> {
        load_experiment(&mut self.tx, key).await
    }

    /// Whether an experiment key was ever used (soft-deleted included).
    pub async fn experiment_key_taken(&mut self, key: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM experiments WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// The experiments of a layer.
    pub async fn experiments_in_layer(&mut self, layer: &str) -> Result<Vec<ExperimentRecord>> {
        load_layer_experiments(&mut self.tx, layer).await
    }

    /// Every experiment that is not soft-deleted, as this change sees them.
    pub async fn experiments(&mut self) -> Result<Vec<ExperimentRecord>> {
        load_experiments(&mut self.tx).await
    }

    /// Every definition of a kind, as this change sees them.
    pub async fn definitions<T: DeserializeOwned>(&mut self, kind: &str) -> Result<Vec<T>> {
        load_definitions(&mut self.tx, kind).await
    }

    /// A definition.
    pub async fn definition<T: DeserializeOwned>(
        &mut self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>> {
        load_definition(&mut self.tx, kind, key).await
    }

    /// Whether a definition key was ever used (soft-deleted included).
    pub async fn definition_key_taken(&mut self, kind: &str, key: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM definitions WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// A stored snapshot.
    pub async fn snapshot(&mut self, version: u64) -> Result<Option<StoredSnapshot>> {
        load_snapshot(&mut self.tx, version).await
    }

    /// Inserts a new experiment.
    pub async fn insert_experiment(&mut self, e: &ExperimentRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO experiments (key, revision, status, layer, owner_team, created_at, updated_at, deleted, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(e.key.as_str())
        .bind(e.revision)
        .bind(e.status.as_str())
        .bind(e.layer.as_deref())
        .bind(e.owner_team.as_str())
        .bind(self.now)
        .bind(self.now)
        .bind(to_json(e)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Replaces an experiment whose stored revision is `e.revision - 1`.
    pub async fn update_experiment(&mut self, e: &ExperimentRecord, deleted: bool) -> Result<()> {
        let n = sqlx::query(
            "UPDATE experiments SET revision = $1, status = $2, layer = $3, owner_team = $4, updated_at = $5, deleted = $6, doc = $7 WHERE key = $8 AND revision = $9",
        )
        .bind(e.revision)
        .bind(e.status.as_str())
        .bind(e.layer.as_deref())
        .bind(e.owner_team.as_str())
        .bind(self.now)
        .bind(i64::from(deleted))
        .bind(to_json(e)?)
        .bind(e.key.as_str())
        .bind(e.revision - 1)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "experiment {:?} was changed concurrently",
                e.key
            )));
        }
        Ok(())
    }

    /// Inserts or replaces a definition. `expected_revision` = `None` inserts.
    pub async fn put_definition<T: Serialize>(
        &mut self,
        kind: &str,
        key: &str,
        doc: &T,
        revision: i64,
        deleted: bool,
    ) -> Result<()> {
        if revision == 1 && !deleted {
            sqlx::query(
                "INSERT INTO definitions (kind, key, revision, created_at, updated_at, deleted, doc) VALUES ($1, $2, 1, $3, $4, 0, $5)",
            )
            .bind(kind)
            .bind(key)
            .bind(self.now)
            .bind(self.now)
            .bind(to_json(doc)?)
            .execute(&mut *self.tx)
            .await?;
            return Ok(());
        }
        let n = sqlx::query(
            "UPDATE definitions SET revision = $1, updated_at = $2, deleted = $3, doc = $4 WHERE kind = $5 AND key = $6 AND revision = $7",
        )
        .bind(revision)
        .bind(self.now)
        .bind(i64::from(deleted))
        .bind(to_json(doc)?)
        .bind(kind)
        .bind(key)
        .bind(revision - 1)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "{kind} {key:?} was changed concurrently"
            )));
        }
        Ok(())
    }

    /// Appends an audit entry for this change.
    pub async fn audit(
        &mut self,
        action: &str,
        entity_type: &str,
        entity_key: &str,
        before: Option<&Value>,
        after: Option<&Value>,
        detail: Option<&str>,
    ) -> Result<()> {
        insert_audit(
            &mut self.tx,
            self.now,
            &self.actor,
            action,
            entity_type,
            entity_key,
            Some(self.version),
            before,
            after,
            detail,
        )
        .await
    }

    /// Builds the snapshot of this version from the definitions as changed so
    /// far, validates it with strata-core and stores it.
    pub async fn publish(
        &mut self,
        reason: &str,
    ) -> Result<Result<LiveConfig, strata_core::SnapshotError>> {
        let rows = sqlx::query(
            "SELECT doc FROM experiments WHERE deleted = 0 AND status IN ('running', 'paused', 'killed', 'concluded') ORDER BY created_at, key",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut experiments = Vec::new();
        let mut disabled = Vec::new();
        for r in &rows {
            let e: ExperimentRecord = from_json("experiment", &r.try_get::<String, _>(0)?)?;
            // to_core() keeps the winner of a concluded experiment only and
            // maps the statuses a snapshot cannot hold to killed, so the
            // servable rule is strata-core's own.
            let core = e.to_core();
            if core.is_servable() {
                experiments.push(core);
            } else {
                let control = e
                    .variants
                    .get(e.control_index())
                    .map(|v| v.key.clone())
                    .unwrap_or_default();
                disabled.push(Disabled {
                    flag: e.flag.clone(),
                    control,
                    status: e.status.as_str().to_owned(),
                });
            }
        }
        let layer_rows = sqlx::query(
            "SELECT doc FROM definitions WHERE kind = 'layer' AND deleted = 0 ORDER BY created_at, key",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut layers = Vec::new();
        for r in &layer_rows {
            let l: LayerRecord = from_json("layer", &r.try_get::<String, _>(0)?)?;
            layers.push(strata_core::Layer {
                key: l.key,
                salt: l.salt,
            });
        }
        let holdout: Option<HoldoutRecord> =
            load_definition(&mut self.tx, "holdout", "global").await?;
        let holdout = holdout.and_then(|h| {
            let permille = crate::model::percent_to_permille(h.percent)?;
            (permille > 0).then_some(strata_core::Holdout {
                salt: h.salt,
                permille,
            })
        });
        let snapshot = strata_core::Snapshot {
            version: self.version,
            holdout,
            layers,
            experiments,
        };
        let extra = SnapshotExtra { disabled };
        self.store_snapshot(&snapshot, &extra, reason).await
    }

    /// Stores `snapshot` (already at this version) after validating it.
    pub async fn store_snapshot(
        &mut self,
        snapshot: &strata_core::Snapshot,
        extra: &SnapshotExtra,
        reason: &str,
    ) -> Result<Result<LiveConfig, strata_core::SnapshotError>> {
        let body = to_json(snapshot)?;
        let extra_json = to_json(extra)?;
        let live = match LiveConfig::from_snapshot(snapshot, body.clone().into(), extra.clone()) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        sqlx::query(
            "INSERT INTO snapshots (version, created_at, actor, reason, body, extra) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i64::try_from(self.version).unwrap_or(i64::MAX))
        .bind(self.now)
        .bind(self.actor.audit_name())
        .bind(reason)
        .bind(body)
        .bind(extra_json)
        .execute(&mut *self.tx)
        .await?;
        if self.retention > 0 && self.version > self.retention {
            let oldest_kept = self.version - self.retention + 1;
            sqlx::query("DELETE FROM snapshots WHERE version < $1")
                .bind(i64::try_from(oldest_kept).unwrap_or(i64::MAX))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(Ok(live))
    }

    /// Commits the change, announcing it to the other instances (PostgreSQL).
    pub async fn commit(mut self) -> Result<()> {
        self.backend.announce(&mut self.tx, self.version).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
