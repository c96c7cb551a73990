//! The scheduled analysis's record of its runs, kept across restarts.
//!
//! A run is stored as the JSON document the API serves; the store neither
//! reads nor checks its fields (the scheduler owns their meaning). Runs are
//! not config changes: no snapshot, no version, no audit entry (the looks
//! a run publishes are audited when published).

use serde_json::Value;
use sqlx::Row;

use super::{from_json, to_json, ConfigStore, Result};

impl ConfigStore {
    /// Stores run `id` (replacing an earlier state of the same run), then
    /// forgets every run more than `keep` before it.
    pub async fn save_analysis_run(&self, id: u64, doc: &Value, keep: u64) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO analysis_runs (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        )
        .bind(id)
        .bind(to_json(doc)?)
        .execute(&mut *tx)
        .await?;
        let oldest = id.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
        sqlx::query("DELETE FROM analysis_runs WHERE id <= $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest `limit` runs, the latest first.
    pub async fn analysis_runs(&self, limit: u64) -> Result<Vec<Value>> {
        let rows = sqlx::query("SELECT doc FROM analysis_runs ORDER BY id DESC LIMIT $1")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| from_json("analysis run", &r.try_get::<String, _>(0)?))
            .collect()
    }
}
