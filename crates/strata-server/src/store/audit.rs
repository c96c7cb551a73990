//! The audit log: append-only, one sequence across every kind of entry.
//!
//! A config change appends its entries inside its own [`WriteTx`](super::WriteTx),
//! so they carry the version it publishes and exist only if it commits.
//! Events outside a config change (a denied request, a key created or
//! revoked, results published or retracted) append in their own transaction
//! under the writer lock, with no version. The sequence number comes from the
//! `audit` counter, bumped in the same transaction, so a change that rolls
//! back takes no number.

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::{from_json, now_ms, rfc3339, to_json, Actor, ConfigStore, Result};

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

impl ConfigStore {
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
}

#[allow(clippy::too_many_arguments, reason = "one row of the audit table")]
pub(super) async fn insert_audit(
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
