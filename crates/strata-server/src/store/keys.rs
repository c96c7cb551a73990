//! API keys, stored by the SHA-256 of their token, never the token itself.
//!
//! A key is never deleted, only revoked. Creating and revoking are audited
//! in the same transaction.

use serde::Serialize;
use sqlx::Row;

use super::audit::insert_audit;
use super::{now_ms, rfc3339, Actor, ConfigStore, Result, StoreError};

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

impl ConfigStore {
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
