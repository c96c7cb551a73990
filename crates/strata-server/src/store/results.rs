//! Published analysis results, kept as a history of looks per experiment.
//!
//! Publishing and retracting are not config changes: they publish no
//! snapshot and bump no config version, but each is audited in the same
//! transaction (`results.publish`, `results.retract`). A retracted look stays
//! in the history, marked, and is never the latest.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::audit::insert_audit;
use super::{from_json, now_ms, rfc3339, to_json, Actor, ConfigStore, Result};

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

/// A look to store ([`ConfigStore::insert_results`]).
#[derive(Debug, Clone, Copy)]
pub struct NewLook<'a> {
    /// The experiment.
    pub experiment: &'a str,
    /// Its owning team (results are team data).
    pub owner_team: &'a str,
    /// The look's `as_of`, ms.
    pub as_of: i64,
    /// The document as published.
    pub doc: &'a Value,
    /// Its summary for the history.
    pub summary: &'a Value,
    /// Each failing health check as a `check: message` line.
    pub failed_checks: &'a [String],
}

impl ConfigStore {
    /// Stores a published look and audits it, with one
    /// `results.check_failed` entry per failing health check. Returns its
    /// sequence number.
    pub async fn insert_results(&self, look: &NewLook<'_>, actor: &Actor) -> Result<u64> {
        let NewLook {
            experiment,
            owner_team,
            as_of,
            doc,
            summary,
            failed_checks,
        } = *look;
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
            "INSERT INTO results (seq, experiment, owner_team, as_of, published_at, published_by, doc, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(seq)
        .bind(experiment)
        .bind(owner_team)
        .bind(as_of)
        .bind(now)
        .bind(actor.audit_name())
        .bind(to_json(doc)?)
        .bind(to_json(summary)?)
        .execute(&mut *tx)
        .await?;
        // The publication and each failing health check of the look, with
        // the look, atomically.
        let published = (
            "results.publish",
            format!("seq {seq}, as of {}", rfc3339(as_of)),
        );
        let failed = failed_checks
            .iter()
            .map(|f| ("results.check_failed", format!("seq {seq}: {f}")));
        for (action, detail) in std::iter::once(published).chain(failed) {
            audit_look(&mut tx, now, actor, action, experiment, &detail).await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// The publications of `experiment`'s results, latest `as_of` first,
    /// each with its summary (null for looks published before summaries
    /// were kept); documents not loaded.
    pub async fn results_history(
        &self,
        experiment: &str,
    ) -> Result<Vec<(ResultsMeta, Option<Value>)>> {
        let rows = sqlx::query(
            "SELECT seq, as_of, published_at, published_by, retracted_at, retracted_by, retract_reason, summary FROM results WHERE experiment = $1 ORDER BY as_of DESC, seq DESC",
        )
        .bind(experiment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let summary = r
                    .try_get::<Option<String>, _>(7)?
                    .map(|s| from_json("results summary", &s))
                    .transpose()?;
                Ok((results_meta(r)?, summary))
            })
            .collect()
    }

    /// The `as_of` (ms) and summary of the latest look (by `as_of`,
    /// retracted looks left out) of each of `experiments` that has one, in
    /// one query: what a list of experiments shows beside each.
    pub async fn latest_summaries(
        &self,
        experiments: &[&str],
    ) -> Result<Vec<(String, i64, Value)>> {
        if experiments.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=experiments.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT r.experiment, r.as_of, r.summary FROM results r WHERE r.experiment IN ({}) AND r.seq = (SELECT r2.seq FROM results r2 WHERE r2.experiment = r.experiment AND r2.retracted_at IS NULL ORDER BY r2.as_of DESC, r2.seq DESC LIMIT 1)",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for e in experiments {
            q = q.bind(*e);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let key: String = r.try_get(0)?;
            let as_of: i64 = r.try_get(1)?;
            if let Some(s) = r.try_get::<Option<String>, _>(2)? {
                out.push((key, as_of, from_json("results summary", &s)?));
            }
        }
        Ok(out)
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
        audit_look(&mut tx, now, actor, "results.retract", experiment, &detail).await?;
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
}

/// Audits `action` on a look of `experiment`, its detail naming the look.
async fn audit_look(
    c: &mut sqlx::AnyConnection,
    now: i64,
    actor: &Actor,
    action: &str,
    experiment: &str,
    detail: &str,
) -> Result<()> {
    insert_audit(
        c,
        now,
        actor,
        action,
        "experiment",
        experiment,
        None,
        None,
        None,
        Some(detail),
    )
    .await
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
