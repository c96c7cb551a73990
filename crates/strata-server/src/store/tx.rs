//! The one write path for config: a [`WriteTx`].
//!
//! A change takes this instance's writer lock, then bumps
//! `config_head.version` inside its transaction, which locks the row until
//! commit and so serialises writers across instances too. It writes
//! experiments and definitions with optimistic concurrency (the stored
//! `revision` must be the one before), audits under its actor at its version,
//! and publishes: the snapshot is built from the definitions as changed so
//! far, validated by strata-core and stored. A snapshot strata-core refuses
//! is returned to the caller, which drops the change; dropping a `WriteTx`
//! rolls back everything, the version bump included. [`WriteTx::commit`]
//! announces the version to the other instances inside the transaction.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Row, Transaction};

use super::audit::insert_audit;
use super::read::{
    load_definition, load_definitions, load_experiment, load_experiments, load_layer_experiments,
    load_snapshot,
};
use super::{
    from_json, now_ms, to_json, Actor, Backend, ConfigStore, Result, StoreError, StoredSnapshot,
};
use crate::live::{Disabled, LiveConfig, SnapshotExtra};
use crate::model::{ExperimentRecord, HoldoutRecord, LayerRecord};

impl ConfigStore {
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
    /// The transaction's connection, for the store's other rooms.
    pub(super) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

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

    /// Stores a definition at `revision`: revision 1 of a live definition
    /// inserts it, any other revision (or a deletion) replaces the stored one.
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
