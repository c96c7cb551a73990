//! The guardrail monitor's evaluations and the reviews of breaches that
//! wait for a person.
//!
//! An evaluation is stored with its document (input and decision, which
//! the store does not read) and the columns the API filters on. A review
//! (confirm or dismiss) is audited in the same transaction that records it.
//! Evaluations that decided nothing are pruned after a while; those that
//! acted or breached are kept.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::audit::insert_audit;
use super::{from_json, now_ms, rfc3339, to_json, Actor, ConfigStore, Result};

/// One stored evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EvaluationRecord {
    /// `ge_…`.
    pub id: String,
    /// The experiment.
    pub experiment: String,
    /// The guardrail definition's key.
    pub guardrail: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// `skipped`, `breach`, `no_breach` or `insufficient`.
    pub outcome: String,
    /// The action it called for: `none`, `kill`, `pause`, `alert`,
    /// `await_approval`.
    pub action: String,
    /// What was done: `killed`, `paused`, `alerted`, `awaiting_approval`,
    /// `already_ended`, or `failed: …`; none when nothing was to be done.
    pub taken: Option<String>,
    /// For a breach awaiting approval: `pending`, `confirmed` or `dismissed`.
    pub review: Option<String>,
    /// Who confirmed or dismissed it.
    pub reviewed_by: Option<String>,
    /// When (RFC 3339).
    pub reviewed_at: Option<String>,
    /// `{"input": …, "evaluation": …}`.
    #[schema(value_type = Object)]
    pub doc: Value,
}

const COLUMNS: &str =
    "id, experiment, guardrail, at, outcome, action, taken, review, reviewed_by, reviewed_at, doc";

fn record(r: &sqlx::any::AnyRow) -> Result<EvaluationRecord> {
    let reviewed_at: Option<i64> = r.try_get(9)?;
    Ok(EvaluationRecord {
        id: r.try_get(0)?,
        experiment: r.try_get(1)?,
        guardrail: r.try_get(2)?,
        at: rfc3339(r.try_get(3)?),
        outcome: r.try_get(4)?,
        action: r.try_get(5)?,
        taken: r.try_get(6)?,
        review: r.try_get(7)?,
        reviewed_by: r.try_get(8)?,
        reviewed_at: reviewed_at.map(rfc3339),
        doc: from_json("guardrail evaluation", &r.try_get::<String, _>(10)?)?,
    })
}

impl ConfigStore {
    /// Stores an evaluation (its `at` is now; `id`, the columns and the
    /// document as given) and returns it as stored.
    pub async fn insert_guardrail_evaluation(
        &self,
        mut e: EvaluationRecord,
    ) -> Result<EvaluationRecord> {
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO guardrail_evaluations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9)"
        ))
        .bind(&e.id)
        .bind(&e.experiment)
        .bind(&e.guardrail)
        .bind(now)
        .bind(&e.outcome)
        .bind(&e.action)
        .bind(&e.taken)
        .bind(&e.review)
        .bind(to_json(&e.doc)?)
        .execute(&self.pool)
        .await?;
        e.at = rfc3339(now);
        e.reviewed_by = None;
        e.reviewed_at = None;
        Ok(e)
    }

    /// Sets what was done about evaluation `id`.
    pub async fn set_guardrail_taken(&self, id: &str, taken: &str) -> Result<()> {
        sqlx::query("UPDATE guardrail_evaluations SET taken = $1 WHERE id = $2")
            .bind(taken)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The latest evaluations of `experiment` (of one guardrail, when
    /// given), the latest first, at most `limit`.
    pub async fn guardrail_evaluations(
        &self,
        experiment: &str,
        guardrail: Option<&str>,
        limit: u64,
    ) -> Result<Vec<EvaluationRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match guardrail {
            Some(g) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM guardrail_evaluations WHERE experiment = $1 AND guardrail = $2 ORDER BY at DESC, id DESC LIMIT $3"
                ))
                .bind(experiment)
                .bind(g)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM guardrail_evaluations WHERE experiment = $1 ORDER BY at DESC, id DESC LIMIT $2"
                ))
                .bind(experiment)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(record).collect()
    }

    /// The latest evaluation of each guardrail of `experiment`.
    pub async fn latest_guardrail_evaluations(
        &self,
        experiment: &str,
    ) -> Result<Vec<EvaluationRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guardrail_evaluations g WHERE experiment = $1 AND at = (SELECT MAX(at) FROM guardrail_evaluations h WHERE h.experiment = g.experiment AND h.guardrail = g.guardrail) ORDER BY guardrail, id DESC"
        ))
        .bind(experiment)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<EvaluationRecord> = Vec::new();
        for r in rows.iter().map(record) {
            let r = r?;
            // Two evaluations in the same millisecond: keep one.
            if out.last().is_none_or(|l| l.guardrail != r.guardrail) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Evaluation `id`.
    pub async fn guardrail_evaluation(&self, id: &str) -> Result<Option<EvaluationRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guardrail_evaluations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// The latest breach of `guardrail` on `experiment` awaiting a review.
    pub async fn pending_guardrail_breach(
        &self,
        experiment: &str,
        guardrail: &str,
    ) -> Result<Option<EvaluationRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guardrail_evaluations WHERE experiment = $1 AND guardrail = $2 AND review = 'pending' ORDER BY at DESC, id DESC LIMIT 1"
        ))
        .bind(experiment)
        .bind(guardrail)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Records `review` (`confirmed` or `dismissed`) of every pending
    /// breach of `guardrail` on `experiment`, audited as
    /// `guardrail.<confirm|dismiss>` under `actor` with `detail`; returns
    /// how many breaches it closed.
    pub async fn review_guardrail_breaches(
        &self,
        experiment: &str,
        guardrail: &str,
        review: &str,
        actor: &Actor,
        detail: &str,
    ) -> Result<u64> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE guardrail_evaluations SET review = $1, reviewed_by = $2, reviewed_at = $3 WHERE experiment = $4 AND guardrail = $5 AND review = 'pending'",
        )
        .bind(review)
        .bind(actor.audit_name())
        .bind(now)
        .bind(experiment)
        .bind(guardrail)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let action = if review == "confirmed" {
            "guardrail.confirm"
        } else {
            "guardrail.dismiss"
        };
        let after = serde_json::json!({"guardrail": guardrail, "review": review, "breaches": n});
        insert_audit(
            &mut tx,
            now,
            actor,
            action,
            "experiment",
            experiment,
            None,
            None,
            Some(&after),
            Some(detail),
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Forgets evaluations before `before_ms` that decided nothing
    /// (skipped, no breach, insufficient); returns how many.
    pub async fn prune_guardrail_evaluations(&self, before_ms: i64) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM guardrail_evaluations WHERE at < $1 AND outcome <> 'breach' AND action = 'none'",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }
}
