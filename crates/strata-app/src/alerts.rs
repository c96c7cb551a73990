//! The sender of alerts: a background job that posts the control plane's
//! queued deliveries to their webhooks.
//!
//! Alerts are queued by the jobs that raise them
//! ([`strata_server::service::AlertService::raise`]); this job takes the
//! due deliveries every [`AlertsConfig::poll`], posts each body with its
//! signature (`X-Strata-Signature: sha256=<hex HMAC-SHA256 of the body>`),
//! and records the outcome. A receiver that answers other than 2xx, or not
//! at all within [`AlertsConfig::timeout`], is retried with exponential
//! backoff (1 s, 2 s, 4 s, … at most an hour apart) up to
//! [`AlertsConfig::max_attempts`]; then the delivery is `failed`. Every
//! attempt is visible in `GET /api/v1/alerts/deliveries`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_server::service::alerts::{signature, SIGNATURE_HEADER};
use strata_server::store::{now_ms, Attempt, Delivery};
use strata_server::{AppState, Mount};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the sender works.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// How often due deliveries are looked for (default 1 s).
    pub poll: Duration,
    /// How long a receiver has to answer (default 10 s).
    pub timeout: Duration,
    /// Attempts before a delivery is given up (default 8: about four
    /// minutes of retries).
    pub max_attempts: u64,
    /// The first retry's delay; each next one doubles, up to an hour
    /// (default 1 s).
    pub first_backoff: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_backoff: Duration::from_secs(1),
        }
    }
}

/// The delay before retry number `attempt` (1 = the first retry).
pub fn backoff(first: Duration, attempt: u64) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    first.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// The alert sender, mounted on `strata serve`.
#[derive(Debug)]
pub struct AlertsMount {
    state: AppState,
    cfg: AlertsConfig,
    client: reqwest::Client,
    delivered: Arc<AtomicU64>,
    failed_attempts: Arc<AtomicU64>,
}

impl AlertsMount {
    /// The sender of `state`'s queued deliveries.
    pub fn new(state: &AppState, cfg: AlertsConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the alerts' http client: {e}"))?;
        Ok(Self {
            state: state.clone(),
            cfg,
            client,
            delivered: Arc::default(),
            failed_attempts: Arc::default(),
        })
    }
}

/// Posts one delivery and says what happened.
async fn attempt(
    client: &reqwest::Client,
    cfg: &AlertsConfig,
    d: &Delivery,
    secret: Option<&str>,
) -> Attempt {
    let Some(secret) = secret else {
        return Attempt::Failed {
            status: None,
            error: "the webhook was removed".into(),
            next_at: None,
        };
    };
    let sent = client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, &d.body))
        .header("x-strata-event", &d.event)
        .header("x-strata-delivery", &d.id)
        .body(d.body.clone())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(r) if r.status().is_success() => {
            return Attempt::Delivered {
                status: r.status().as_u16(),
            }
        }
        Ok(r) => (
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
        ),
        Err(e) => (None, format!("no answer from the receiver: {e}")),
    };
    let made = d.attempts + 1;
    let next_at = (made < cfg.max_attempts).then(|| {
        let wait = backoff(cfg.first_backoff, made);
        now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
    });
    Attempt::Failed {
        status,
        error,
        next_at,
    }
}

impl Mount for AlertsMount {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let state = self.state.clone();
        let cfg = self.cfg.clone();
        let client = self.client.clone();
        let (delivered, failed) = (self.delivered.clone(), self.failed_attempts.clone());
        vec![tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(cfg.poll) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let store = &state.store;
                let due = match store.due_deliveries(now_ms(), 100).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the alert deliveries");
                        continue;
                    }
                };
                if due.is_empty() {
                    continue;
                }
                let hooks = match store.webhooks().await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the alert webhooks");
                        continue;
                    }
                };
                for d in due {
                    if *shutdown.borrow() {
                        return;
                    }
                    let secret = hooks
                        .iter()
                        .find(|h| h.id == d.webhook_id)
                        .map(|h| h.secret.as_str());
                    let outcome = attempt(&client, &cfg, &d, secret).await;
                    match &outcome {
                        Attempt::Delivered { .. } => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Attempt::Failed { error, next_at, .. } => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(delivery = %d.id, url = %d.url, %error, retry = next_at.is_some(), "alert delivery failed");
                        }
                    }
                    if let Err(e) = store.record_attempt(&d.id, &outcome).await {
                        tracing::warn!(delivery = %d.id, error = %e, "cannot record an alert delivery");
                    }
                }
            }
        })]
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP strata_alert_deliveries_total Alert deliveries attempted, by outcome.\n# TYPE strata_alert_deliveries_total counter\nstrata_alert_deliveries_total{{outcome=\"delivered\"}} {}\nstrata_alert_deliveries_total{{outcome=\"failed\"}} {}\n",
            self.delivered.load(Ordering::Relaxed),
            self.failed_attempts.load(Ordering::Relaxed)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 1), Duration::from_secs(1));
        assert_eq!(backoff(s, 2), Duration::from_secs(2));
        assert_eq!(backoff(s, 5), Duration::from_secs(16));
        assert_eq!(backoff(s, 40), Duration::from_secs(3600));
    }
}
