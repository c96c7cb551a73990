//! Sticky assignments of remote evaluation (`/sdk/v1/evaluate`, OFREP):
//! what a sticky experiment assigned a unit, kept so that the unit keeps it
//! (assignment spec, section 9).
//!
//! Reads happen on the evaluation path, so they are one query for all of a
//! context's unit ids. Writes insert only where nothing is kept: what was
//! kept first wins, whichever instance kept it (the evaluator returns an
//! entry only where the lookup had none, and a stale entry naming a removed
//! variant is re-assigned by hash, the same way every time).

use sqlx::Row;
use strata_core::StickyAssignment;

use super::{now_ms, ConfigStore, Result};

/// At most this many unit ids per lookup (a context names a handful).
const MAX_UNITS: usize = 32;

impl ConfigStore {
    /// Every sticky assignment kept for the given units (attribute, id).
    pub async fn sticky_assignments(
        &self,
        units: &[(String, String)],
    ) -> Result<Vec<StickyAssignment>> {
        let units = &units[..units.len().min(MAX_UNITS)];
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let cond = (0..units.len())
            .map(|i| format!("(unit_attr = ${} AND unit_id = ${})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT unit_attr, unit_id, experiment, variant FROM sticky_assignments WHERE {cond}"
        );
        let mut q = sqlx::query(&sql);
        for (attr, id) in units {
            q = q.bind(attr.as_str()).bind(id.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(StickyAssignment {
                    unit_attr: r.try_get("unit_attr")?,
                    unit_id: r.try_get("unit_id")?,
                    experiment: r.try_get("experiment")?,
                    variant: r.try_get("variant")?,
                })
            })
            .collect()
    }

    /// Keeps `entries` where nothing is kept yet for the same unit and
    /// experiment.
    pub async fn keep_sticky_assignments(&self, entries: &[StickyAssignment]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO sticky_assignments (unit_attr, unit_id, experiment, variant, assigned_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (unit_attr, unit_id, experiment) \
                 DO NOTHING",
            )
            .bind(e.unit_attr.as_str())
            .bind(e.unit_id.as_str())
            .bind(e.experiment.as_str())
            .bind(e.variant.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
