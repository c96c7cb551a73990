//! Leases of the jobs that run on one node at a time.
//!
//! A lease is a row `(name, holder, expires_at)`: claiming takes it when it
//! is free or expired, or renews it when the claimant holds it — one
//! conditional upsert, so two nodes claiming at once cannot both win on
//! either backend. Times are the system clock's milliseconds (leases
//! measure the process's own work, not calendar time); the nodes' clocks
//! must agree to well within a lease's length.

use sqlx::Row;

use super::{ConfigStore, Result};

impl ConfigStore {
    /// Claims lease `name` for `holder` until `now_ms + ttl_ms` if it is
    /// free, expired or already `holder`'s; returns the holder after the
    /// attempt (`holder` when the claim succeeded).
    pub async fn claim_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO job_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT holder FROM job_leases WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let current: String = row.try_get(0)?;
        tx.commit().await?;
        Ok(current)
    }

    /// Gives lease `name` up if `holder` holds it (a clean stop hands the
    /// jobs over at once rather than at expiry).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{ConfigStore, StoreOptions};

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(&StoreOptions {
            data_dir: dir.path().to_path_buf(),
            database_url: None,
            max_connections: 2,
            snapshot_retention: 0,
        })
        .await
        .unwrap();
        let claim = |who: &'static str, now: i64| {
            let store = &store;
            async move { store.claim_lease("jobs", who, now, 100).await.unwrap() }
        };
        assert_eq!(claim("a", 0).await, "a");
        assert_eq!(claim("b", 50).await, "a", "held");
        assert_eq!(claim("a", 90).await, "a", "renewed to 190");
        assert_eq!(claim("b", 150).await, "a", "still held after the renewal");
        assert_eq!(claim("b", 191).await, "b", "expired: taken over");
        assert_eq!(claim("a", 192).await, "b");
        store.release_lease("jobs", "a").await.unwrap();
        assert_eq!(claim("a", 193).await, "b", "only the holder releases");
        store.release_lease("jobs", "b").await.unwrap();
        assert_eq!(claim("a", 194).await, "a", "released: free");
    }
}
