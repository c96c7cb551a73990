//! The periods of the global holdout and their looks.
//!
//! A period starts and ends inside the config change that sets the
//! holdout's salt or size ([`WriteTx::put_holdout_period`]), so the periods
//! always agree with the served holdout. A look is not a config change: it
//! publishes no snapshot and bumps no version, but is audited in the same
//! transaction (`holdout.look`); a period's final look is never replaced.

use sqlx::Row;
use strata_model::holdout::{HoldoutLook, HoldoutPeriod};

use super::audit::insert_audit;
use super::tx::WriteTx;
use super::{from_json, now_ms, to_json, Actor, ConfigStore, Result, StoreError};

fn period_key(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ConfigStore {
    /// Every period of the holdout, the latest first.
    pub async fn holdout_periods(&self) -> Result<Vec<HoldoutPeriod>> {
        let rows = sqlx::query("SELECT doc FROM holdout_periods ORDER BY period DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| from_json("holdout period", &r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Stores `look` as period `period`'s latest look, audited as
    /// `holdout.look` under `actor`. Refused ([`StoreError::Conflict`]) for
    /// a period with its final look, and for a final look of a period that
    /// has not ended.
    pub async fn save_holdout_look(
        &self,
        period: u64,
        look: &HoldoutLook,
        actor: &Actor,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT doc FROM holdout_periods WHERE period = $1")
            .bind(period_key(period))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!(
                "holdout period {period} does not exist"
            )));
        };
        let mut p: HoldoutPeriod = from_json("holdout period", &row.try_get::<String, _>(0)?)?;
        if p.look.as_ref().is_some_and(|l| l.final_look) {
            return Err(StoreError::Conflict(format!(
                "holdout period {period} has its final look already"
            )));
        }
        if look.final_look && p.ended_at.is_none() {
            return Err(StoreError::Conflict(format!(
                "holdout period {period} has not ended: its looks are not final"
            )));
        }
        p.look = Some(look.clone());
        sqlx::query("UPDATE holdout_periods SET doc = $1 WHERE period = $2")
            .bind(to_json(&p)?)
            .bind(period_key(period))
            .execute(&mut *tx)
            .await?;
        let detail = format!(
            "period {period}, as of {}{}",
            look.as_of,
            if look.final_look { ", final" } else { "" }
        );
        insert_audit(
            &mut tx,
            now_ms(),
            actor,
            "holdout.look",
            "holdout",
            "global",
            None,
            None,
            None,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl WriteTx {
    /// The latest period of the holdout, as this change sees it.
    pub async fn latest_holdout_period(&mut self) -> Result<Option<HoldoutPeriod>> {
        let row = sqlx::query("SELECT doc FROM holdout_periods ORDER BY period DESC LIMIT 1")
            .fetch_optional(self.conn())
            .await?;
        row.map(|r| from_json("holdout period", &r.try_get::<String, _>(0)?))
            .transpose()
    }

    /// Inserts or replaces period `p.period`.
    pub async fn put_holdout_period(&mut self, p: &HoldoutPeriod) -> Result<()> {
        sqlx::query(
            "INSERT INTO holdout_periods (period, doc) VALUES ($1, $2) ON CONFLICT (period) DO UPDATE SET doc = excluded.doc",
        )
        .bind(period_key(p.period))
        .bind(to_json(p)?)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
