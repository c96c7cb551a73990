//! Alert webhooks and the outbox of their deliveries.
//!
//! Registering and removing a webhook is audited like a key. An alert is
//! stored as one delivery per subscribed webhook, with its body already
//! rendered, before anything is sent: a restart or a receiver that is down
//! delays a delivery (it is retried with backoff) but does not lose it.

use serde::Serialize;
use sqlx::Row;

use super::audit::insert_audit;
use super::{from_json, now_ms, rfc3339, to_json, Actor, ConfigStore, Result};

/// A registered webhook (its secret is never read back through the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// `wh_…`.
    pub id: String,
    /// Where alerts are posted.
    pub url: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// Who registered it.
    pub created_by: String,
    /// The signing secret (not serialised).
    #[serde(skip)]
    pub secret: String,
}

/// One alert to one webhook: pending, delivered or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `dl_…`.
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// Its URL when the alert was raised.
    pub url: String,
    /// The event (`health.srm`, …).
    pub event: String,
    /// The experiment it is about, if any.
    pub experiment: Option<String>,
    /// `pending` (to be sent or retried), `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts so far.
    pub attempts: u64,
    /// When the next attempt is due (RFC 3339; pending deliveries).
    pub next_attempt_at: String,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the alert was raised (RFC 3339).
    pub created_at: String,
    /// When the delivery last changed (RFC 3339).
    pub updated_at: String,
    /// The body posted (JSON text).
    #[serde(skip)]
    pub body: String,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Try again at `next_at` (ms), or give up when `next_at` is `None`.
    Failed {
        /// The status, when the receiver answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again; `None`: give up.
        next_at: Option<i64>,
    },
}

fn webhook(r: &sqlx::any::AnyRow) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        secret: r.try_get(2)?,
        events: from_json("webhook events", &r.try_get::<String, _>(3)?)?,
        created_at: rfc3339(r.try_get(4)?),
        created_by: r.try_get(5)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, url, event, experiment, body, status, attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at";

fn delivery(r: &sqlx::any::AnyRow) -> Result<Delivery> {
    let code: Option<i64> = r.try_get(9)?;
    Ok(Delivery {
        id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        url: r.try_get(2)?,
        event: r.try_get(3)?,
        experiment: r.try_get(4)?,
        body: r.try_get(5)?,
        status: r.try_get(6)?,
        attempts: u64::try_from(r.try_get::<i64, _>(7)?).unwrap_or(0),
        next_attempt_at: rfc3339(r.try_get(8)?),
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: r.try_get(10)?,
        created_at: rfc3339(r.try_get(11)?),
        updated_at: rfc3339(r.try_get(12)?),
    })
}

impl ConfigStore {
    /// Registers a webhook, audited (`alerts.webhook.create`); returns it
    /// as stored (with its registration time and registrar).
    pub async fn insert_webhook(&self, mut w: Webhook, actor: &Actor) -> Result<Webhook> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO alert_webhooks (id, url, secret, events, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&w.id)
        .bind(&w.url)
        .bind(&w.secret)
        .bind(to_json(&w.events)?)
        .bind(now)
        .bind(actor.audit_name())
        .execute(&mut *tx)
        .await?;
        let after = serde_json::json!({"url": w.url, "events": w.events});
        insert_audit(
            &mut tx,
            now,
            actor,
            "alerts.webhook.create",
            "webhook",
            &w.id,
            None,
            None,
            Some(&after),
            None,
        )
        .await?;
        tx.commit().await?;
        w.created_at = rfc3339(now);
        w.created_by = actor.audit_name().to_owned();
        Ok(w)
    }

    /// Every webhook, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(
            "SELECT id, url, secret, events, created_at, created_by FROM alert_webhooks ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook).collect()
    }

    /// Removes a webhook, audited (`alerts.webhook.delete`); `false` when
    /// there is none of that id. Its pending deliveries are dropped.
    pub async fn delete_webhook(&self, id: &str, actor: &Actor) -> Result<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM alert_webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if gone {
            let now = now_ms();
            sqlx::query(
                "UPDATE alert_deliveries SET status = 'failed', last_error = 'the webhook was removed', updated_at = $1 WHERE webhook_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            insert_audit(
                &mut tx,
                now,
                actor,
                "alerts.webhook.delete",
                "webhook",
                id,
                None,
                None,
                None,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Stores one pending delivery per webhook subscribed to `event`, due
    /// now; `body` is the same for each. Returns how many.
    pub async fn enqueue_alert(
        &self,
        event: &str,
        experiment: Option<&str>,
        body: &str,
        ids: &mut (dyn FnMut() -> String + Send),
    ) -> Result<usize> {
        let hooks: Vec<Webhook> = self
            .webhooks()
            .await?
            .into_iter()
            .filter(|w| w.events.iter().any(|e| e == event))
            .collect();
        if hooks.is_empty() {
            return Ok(0);
        }
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for w in &hooks {
            sqlx::query(
                "INSERT INTO alert_deliveries (id, webhook_id, url, event, experiment, body, status, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7)",
            )
            .bind(ids())
            .bind(&w.id)
            .bind(&w.url)
            .bind(event)
            .bind(experiment)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(hooks.len())
    }

    /// Pending deliveries due at `now` (ms), oldest first, at most `limit`.
    pub async fn due_deliveries(&self, now: i64, limit: u64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// The latest deliveries, the latest first, at most `limit`.
    pub async fn deliveries(&self, limit: u64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// Records an attempt at delivery `id`.
    pub async fn record_attempt(&self, id: &str, attempt: &Attempt) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let now = now_ms();
        let (status, code, error, next) = match attempt {
            Attempt::Delivered { status } => ("delivered", Some(i64::from(*status)), None, now),
            Attempt::Failed {
                status,
                error,
                next_at,
            } => (
                if next_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                status.map(i64::from),
                Some(error.as_str()),
                next_at.unwrap_or(now),
            ),
        };
        sqlx::query(
            "UPDATE alert_deliveries SET status = $1, attempts = attempts + 1, last_status_code = $2, last_error = $3, next_attempt_at = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(code)
        .bind(error)
        .bind(next)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
