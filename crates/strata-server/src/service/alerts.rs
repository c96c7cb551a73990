//! Alerts: what the platform's jobs tell people, posted to the webhooks
//! admins register.
//!
//! An alert is raised by a job (a failing SRM check, an automatic pause, a
//! failed analysis, a burst of changes to one experiment) through
//! [`AlertService::raise`]: it is audited, counted, and stored as one
//! delivery per webhook subscribed to its event (an outbox; the sender is a
//! background job of the composition root). The body is JSON with a
//! Slack-compatible `text`, the structured fields and a link to the
//! experiment, signed in `X-Strata-Signature: sha256=<hex HMAC-SHA256 of the
//! body with the webhook's secret>` ([`signature`]), so a receiver can check
//! it came from this server and was not altered.

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::{random_hex, to_hex, Perm};
use crate::service::permissions::authorize;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{now_ms, rfc3339, Delivery, StoreError, Webhook};

/// The events a webhook may subscribe to.
pub const EVENTS: &[&str] = &[
    "guardrail.breach",
    "experiment.auto_killed",
    "experiment.auto_paused",
    "health.srm",
    "analysis.failed",
    "data.stale",
    "experiment.change_anomaly",
];

/// The header carrying a delivery's signature.
pub const SIGNATURE_HEADER: &str = "x-strata-signature";

/// Shortest accepted webhook secret, in bytes: a short secret is guessable
/// and makes the signature worthless.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest accepted webhook URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// The body of `POST /api/v1/alerts/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://` or `https://` URL the alerts are posted to.
    pub url: String,
    /// Shared secret the deliveries are signed with (at least 16 bytes).
    pub secret: String,
    /// The events to receive (see [`EVENTS`]).
    pub events: Vec<String>,
}

/// An alert a job raises.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// One of [`EVENTS`].
    pub event: &'static str,
    /// The experiment it is about, if any.
    pub experiment: Option<String>,
    /// One sentence for people (Slack's `text`).
    pub text: String,
    /// The figures behind it.
    pub fields: Value,
}

/// The JSON body posted for `alert` raised at `at_ms`.
pub fn body(alert: &Alert, at_ms: i64) -> String {
    let link = alert
        .experiment
        .as_ref()
        .map(|k| format!("/api/v1/experiments/{k}"));
    json!({
        "event": alert.event,
        "experiment": alert.experiment,
        "text": alert.text,
        "fields": alert.fields,
        "link": link,
        "at": rfc3339(at_ms),
    })
    .to_string()
}

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Strata-Signature` value of `body` signed with `secret`.
pub fn signature(secret: &str, body: &str) -> String {
    format!(
        "sha256={}",
        to_hex(&hmac_sha256(secret.as_bytes(), body.as_bytes()))
    )
}

/// Webhooks, deliveries and the raising of alerts.
#[derive(Debug, Clone)]
pub struct AlertService {
    state: AppState,
}

impl AlertService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// Registers a webhook (`alerts:write`: admins); audited.
    pub async fn register(
        &self,
        actor: &Actor,
        req: WebhookRequest,
    ) -> Result<Webhook, ServiceError> {
        authorize(&self.state.store, actor, Perm::AlertsWrite, None).await?;
        let url = req.url.trim();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .unwrap_or_default();
        if host.is_empty() || url.len() > MAX_URL_BYTES || url.contains(char::is_whitespace) {
            return Err(ServiceError::validation(
                "url",
                format!(
                    "url must be an http:// or https:// address with a host, at most {MAX_URL_BYTES} bytes, got {:?}",
                    req.url
                ),
            ));
        }
        if req.secret.len() < MIN_SECRET_BYTES {
            return Err(ServiceError::validation(
                "secret",
                format!("secret must be at least {MIN_SECRET_BYTES} bytes, so that the signature cannot be guessed"),
            ));
        }
        if req.events.is_empty() {
            return Err(ServiceError::validation(
                "events",
                format!("events must name at least one of {}", EVENTS.join(", ")),
            ));
        }
        let mut events: Vec<String> = Vec::new();
        for (i, e) in req.events.iter().enumerate() {
            if !EVENTS.contains(&e.as_str()) {
                return Err(ServiceError::validation(
                    format!("events[{i}]"),
                    format!(
                        "events[{i}]: unknown event {e:?}; expected one of {}",
                        EVENTS.join(", ")
                    ),
                ));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        let id = format!(
            "wh_{}",
            random_hex(8).map_err(|e| ServiceError::Internal(e.message))?
        );
        let w = Webhook {
            id,
            url: url.to_owned(),
            events,
            created_at: String::new(),
            created_by: String::new(),
            secret: req.secret,
        };
        self.state
            .store
            .insert_webhook(w, actor)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Every webhook (`alerts:write`).
    pub async fn list(&self, actor: &Actor) -> Result<Vec<Webhook>, ServiceError> {
        authorize(&self.state.store, actor, Perm::AlertsWrite, None).await?;
        self.state
            .store
            .webhooks()
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Removes a webhook (`alerts:write`); audited.
    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        authorize(&self.state.store, actor, Perm::AlertsWrite, None).await?;
        let gone = self
            .state
            .store
            .delete_webhook(id, actor)
            .await
            .map_err(|e| self.store_error(e))?;
        if gone {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "webhook",
                key: id.to_owned(),
            })
        }
    }

    /// The latest deliveries, at most `limit` (`alerts:write`).
    pub async fn deliveries(
        &self,
        actor: &Actor,
        limit: u64,
    ) -> Result<Vec<Delivery>, ServiceError> {
        authorize(&self.state.store, actor, Perm::AlertsWrite, None).await?;
        self.state
            .store
            .deliveries(limit)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Raises an alert: audited (`alert.<event>`), counted in Prometheus and
    /// queued for every webhook subscribed to its event. Never fails its
    /// caller (the job's own work is done either way); a failure is logged.
    pub async fn raise(&self, alert: Alert) {
        let store = &self.state.store;
        self.state.metrics.alert(alert.event);
        let key = alert.experiment.clone().unwrap_or_default();
        let action = format!("alert.{}", alert.event);
        let audited = store
            .audit_event(
                &Actor::system("alerts"),
                &action,
                "experiment",
                &key,
                Some(&alert.text),
            )
            .await;
        if let Err(e) = audited {
            tracing::warn!(event = alert.event, error = %e, "could not audit an alert");
        }
        let text = body(&alert, now_ms());
        let mut ids = || {
            format!(
                "dl_{}",
                random_hex(8).unwrap_or_else(|_| now_ms().to_string())
            )
        };
        match store
            .enqueue_alert(alert.event, alert.experiment.as_deref(), &text, &mut ids)
            .await
        {
            Ok(n) => {
                tracing::info!(event = alert.event, experiment = %key, webhooks = n, "alert raised")
            }
            Err(e) => {
                tracing::error!(event = alert.event, error = %e, "could not queue an alert")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231's test cases 1, 2, 6 and 7 (short key, "Jefe", and keys
    /// longer than a block).
    #[test]
    fn hmac_matches_rfc_4231() {
        let cases = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(hmac_sha256(&key, &msg).to_vec(), unhex(want));
        }
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_has_slack_text_fields_and_a_link() {
        let a = Alert {
            event: "health.srm",
            experiment: Some("exp_x".into()),
            text: "exp_x: sample ratio mismatch".into(),
            fields: json!({"p_value": 1e-9}),
        };
        let v: Value = serde_json::from_str(&body(&a, 0)).unwrap();
        assert_eq!(v["text"], "exp_x: sample ratio mismatch");
        assert_eq!(v["event"], "health.srm");
        assert_eq!(v["fields"]["p_value"], 1e-9);
        assert_eq!(v["link"], "/api/v1/experiments/exp_x");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
    }
}
