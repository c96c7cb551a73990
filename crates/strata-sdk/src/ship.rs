//! The flusher: ships buffered exposures, events and aliases to the
//! collector.
//!
//! Batches are JSON arrays, gzip-compressed, sent one at a time (exposures
//! first: they are the experiment's denominator). A failed batch is retried
//! as is — same records, same `event_id`s — with exponential backoff and
//! full jitter, never sooner than a `Retry-After`, until it is acknowledged,
//! refused for good (a 4xx other than 408/429), older than the buffer's age
//! bound, or the shutdown deadline passes. Because the collector
//! deduplicates events by `event_id`, exposures by (unit, experiment,
//! day) and aliases by their pair of ids, retrying a batch whose acknowledgement was lost stores it once.
//! Records the collector refuses only for now (shed under load, marked
//! `retryable` in its answer) are sent again, on the same schedule, as a
//! smaller batch; records it refuses for good are dropped and counted.
//!
//! Event properties are flat in the data model (string values), so nested
//! objects are flattened to dotted keys (`{"cart": {"items": 3}}` becomes
//! `{"cart.items": 3}`) and arrays are sent as their JSON text.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::backoff::full_jitter;
use crate::buffer::{Alias, Event, Exposure};
use crate::client::Shared;
use crate::hooks::{DropReason, RecordKind, SdkEvent, KINDS, REASONS};

/// How often drops are reported while a batch waits for its retry.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[derive(Serialize)]
struct ExposureOut<'a> {
    unit_id: &'a str,
    experiment: &'a str,
    variant: &'a str,
    assigned_variant: &'a str,
    opted_out: bool,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<BTreeMap<&'a str, &'a str>>,
}

#[derive(Serialize)]
struct EventOut<'a> {
    event_id: String,
    unit_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct AliasOut<'a> {
    anonymous_id: &'a str,
    user_id: &'a str,
    ts: String,
}

/// Flattens nested objects to dotted keys and arrays to their JSON text.
fn flatten(properties: &Map<String, Value>) -> Map<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            Value::Array(_) => {
                out.insert(prefix.to_owned(), Value::String(v.to_string()));
            }
            scalar => {
                out.insert(prefix.to_owned(), scalar.clone());
            }
        }
    }
    let mut out = Map::new();
    for (k, v) in properties {
        walk(k, v, &mut out);
    }
    out
}

/// The records of a batch, kept so that some can be sent again.
enum Records {
    Exposures(Vec<Exposure>),
    Events(Vec<Event>),
    Aliases(Vec<Alias>),
}

/// A batch ready to send: its records, oldest time and body.
struct Batch {
    oldest: SystemTime,
    gzip: Vec<u8>,
    kept: Records,
}

impl Batch {
    /// The batch of `kept`; `None` when it is empty (or cannot be encoded).
    fn new(kept: Records) -> Option<Batch> {
        let (json, oldest) = match &kept {
            Records::Exposures(v) => (
                serde_json::to_vec(&v.iter().map(exposure_out).collect::<Vec<_>>()),
                v.iter().map(|e| e.at).min(),
            ),
            Records::Events(v) => (
                serde_json::to_vec(&v.iter().map(event_out).collect::<Vec<_>>()),
                v.iter().map(|e| e.at).min(),
            ),
            Records::Aliases(v) => (
                serde_json::to_vec(
                    &v.iter()
                        .map(|a| AliasOut {
                            anonymous_id: &a.anonymous_id,
                            user_id: &a.user_id,
                            ts: rfc3339(a.at),
                        })
                        .collect::<Vec<_>>(),
                ),
                v.iter().map(|a| a.at).min(),
            ),
        };
        Some(Batch {
            oldest: oldest?,
            gzip: gzip(&json.ok()?).ok()?,
            kept,
        })
    }

    fn kind(&self) -> RecordKind {
        match self.kept {
            Records::Exposures(_) => RecordKind::Exposure,
            Records::Events(_) => RecordKind::Event,
            Records::Aliases(_) => RecordKind::Alias,
        }
    }

    /// Records in the batch.
    fn len(&self) -> usize {
        match &self.kept {
            Records::Exposures(v) => v.len(),
            Records::Events(v) => v.len(),
            Records::Aliases(v) => v.len(),
        }
    }

    /// A batch of the records at `indices` (as the collector numbered them).
    fn subset(self, indices: &[usize]) -> Option<Batch> {
        fn pick<T>(v: Vec<T>, indices: &[usize]) -> Vec<T> {
            v.into_iter()
                .enumerate()
                .filter(|(i, _)| indices.binary_search(i).is_ok())
                .map(|(_, r)| r)
                .collect()
        }
        Batch::new(match self.kept {
            Records::Exposures(v) => Records::Exposures(pick(v, indices)),
            Records::Events(v) => Records::Events(pick(v, indices)),
            Records::Aliases(v) => Records::Aliases(pick(v, indices)),
        })
    }
}

fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(json)?;
    enc.finish()
}

fn exposure_out(e: &Exposure) -> ExposureOut<'_> {
    ExposureOut {
        unit_id: e.unit_id(),
        experiment: e.experiment(),
        variant: e.variant(),
        assigned_variant: e.assigned(),
        opted_out: e.opted_out,
        ts: rfc3339(e.at),
        attributes: e
            .attributes
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()),
    }
}

fn event_out(e: &Event) -> EventOut<'_> {
    EventOut {
        event_id: e.event_id.to_string(),
        unit_id: &e.unit_id,
        kind: &e.kind,
        ts: rfc3339(e.at),
        value: e.value,
        properties: e.properties.as_ref().map(flatten),
    }
}

/// The collector's answer to an acknowledged batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ack {
    accepted: u64,
    duplicates: u64,
    /// Records refused, for good or for now.
    rejected: u64,
    /// Indices, ascending, of the records refused only for now.
    retry: Vec<usize>,
    /// The collector's `Retry-After`, for those.
    retry_after: Option<Duration>,
}

fn parse_ack(body: &[u8], records: usize) -> Ack {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let list = v.get("rejected").and_then(Value::as_array);
    let rejected = list.map_or(0, |r| r.len() as u64);
    let mut retry: Vec<usize> = list
        .into_iter()
        .flatten()
        .filter(|r| r.get("retryable").and_then(Value::as_bool) == Some(true))
        .filter_map(|r| r.get("index")?.as_u64())
        .filter_map(|i| usize::try_from(i).ok())
        .filter(|i| *i < records)
        .collect();
    retry.sort_unstable();
    retry.dedup();
    let duplicates = v.get("duplicates").and_then(Value::as_u64).unwrap_or(0);
    // An acknowledgement without a readable count still acknowledges the
    // batch: whatever was not rejected was stored.
    let accepted = v
        .get("accepted")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| (records as u64).saturating_sub(rejected + duplicates));
    Ack {
        accepted,
        duplicates,
        rejected,
        retry,
        retry_after: None,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Strata).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: f64 = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

enum Outcome {
    Acked(Ack),
    Refused(String),
    Retry(String, Option<Duration>),
}

async fn send(shared: &Shared, batch: &Batch, timeout: Duration) -> Outcome {
    let Some(auth) = shared.opts.ingest_auth.clone() else {
        return Outcome::Refused("no ingest key".to_owned());
    };
    let path = match batch.kind() {
        RecordKind::Exposure => "exposures",
        RecordKind::Event => "events",
        RecordKind::Alias => "aliases",
    };
    let resp = shared
        .http
        .post(format!("{}/collect/v1/{path}", shared.opts.collector_url))
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .timeout(timeout)
        .body(batch.gzip.clone())
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(e.to_string(), None),
    };
    let status = resp.status();
    if status.is_success() {
        // The batch is acknowledged by the status; the body only refines
        // the counts, so a body that fails to arrive does not resend it.
        let wait = retry_after(&resp);
        let body = resp.bytes().await.unwrap_or_default();
        return Outcome::Acked(Ack {
            retry_after: wait,
            ..parse_ack(&body, batch.len())
        });
    }
    let wait = retry_after(&resp);
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Outcome::Retry(format!("status {status}"), wait)
    } else {
        Outcome::Refused(format!("status {status}"))
    }
}

/// Sends one batch until it is settled (delivered or dropped).
async fn deliver(shared: &Shared, mut batch: Batch, stop: &mut watch::Receiver<Option<Instant>>) {
    let c = &shared.counters;
    let drop_batch =
        |batch: &Batch, reason| c.drop_records(batch.kind(), reason, batch.len() as u64);
    let mut attempt = 0u32;
    loop {
        let deadline = *stop.borrow_and_update();
        let mut timeout = shared.opts.request_timeout;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return drop_batch(&batch, DropReason::Shutdown);
            }
            timeout = timeout.min(left);
        }
        let (error, wait) = match send(shared, &batch, timeout).await {
            Outcome::Acked(ack) => {
                let delivered = (batch.len() as u64).saturating_sub(ack.rejected);
                match batch.kind() {
                    RecordKind::Exposure => c.exposures_delivered.add(delivered),
                    RecordKind::Event => c.events_delivered.add(delivered),
                    RecordKind::Alias => c.aliases_delivered.add(delivered),
                }
                let retry = ack.retry.len() as u64;
                c.drop_records(
                    batch.kind(),
                    DropReason::RejectedRecord,
                    ack.rejected.saturating_sub(retry),
                );
                shared.emit(&SdkEvent::BatchSent {
                    kind: batch.kind(),
                    records: batch.len(),
                    accepted: ack.accepted,
                    duplicates: ack.duplicates,
                    rejected: ack.rejected,
                });
                let kind = batch.kind();
                match batch.subset(&ack.retry) {
                    None if retry > 0 => {
                        // Could not be rebuilt (never expected): count them.
                        c.drop_records(kind, DropReason::RejectedRecord, retry);
                        return;
                    }
                    None => return,
                    Some(rest) => batch = rest,
                }
                (format!("{retry} records refused for now"), ack.retry_after)
            }
            Outcome::Refused(error) => {
                shared.emit(&SdkEvent::BatchFailed {
                    kind: batch.kind(),
                    error: &error,
                    attempt: attempt + 1,
                    retry_in: Duration::ZERO,
                });
                return drop_batch(&batch, DropReason::RejectedBatch);
            }
            Outcome::Retry(error, wait) => (error, wait),
        };
        attempt = attempt.saturating_add(1);
        let jitter = full_jitter(shared.opts.retry_base, shared.opts.retry_cap, attempt);
        let delay = wait.map_or(jitter, |w| w.max(jitter));
        let expires = batch.oldest + shared.opts.buffer_max_age;
        if strata_clock::now() + delay > expires {
            return drop_batch(&batch, DropReason::Expired);
        }
        if deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return drop_batch(&batch, DropReason::Shutdown);
        }
        shared.emit(&SdkEvent::BatchFailed {
            kind: batch.kind(),
            error: &error,
            attempt,
            retry_in: delay,
        });
        let until = tokio::time::Instant::now() + delay;
        loop {
            // Drops keep happening on the callers' side while a batch
            // waits; report them at least every second meanwhile.
            let tick = (tokio::time::Instant::now() + DROP_REPORT_EVERY).min(until);
            tokio::select! {
                () = tokio::time::sleep_until(tick) => {
                    report_drops(shared);
                    if tick == until {
                        break;
                    }
                }
                // A shutdown re-checks the deadline at once.
                _ = stop.changed() => break,
            }
        }
    }
}

/// Sends everything buffered, batch by batch: exposures, aliases and
/// events in turn.
async fn drain(shared: &Shared, stop: &mut watch::Receiver<Option<Instant>>) {
    let size = shared.opts.batch_size;
    loop {
        shared.absorb();
        shared.buffer.expire(
            strata_clock::now(),
            shared.opts.buffer_max_age,
            &shared.counters,
        );
        let exposures = shared.buffer.take_exposures(size);
        let aliases = shared.buffer.take_aliases(size);
        let events = shared.buffer.take_events(size);
        if exposures.is_empty() && aliases.is_empty() && events.is_empty() {
            return;
        }
        for batch in [
            Batch::new(Records::Exposures(exposures)),
            Batch::new(Records::Aliases(aliases)),
            Batch::new(Records::Events(events)),
        ]
        .into_iter()
        .flatten()
        {
            deliver(shared, batch, stop).await;
        }
    }
}

/// Reports the drops counted since the previous report.
fn report_drops(shared: &Shared) {
    let mut last = shared
        .reported_drops
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for (k, kind) in KINDS.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let now = shared
                .counters
                .dropped
                .get(k)
                .and_then(|row| row.get(r))
                .map_or(0, |c| c.get());
            if let Some(prev) = last.get_mut(k).and_then(|row| row.get_mut(r)) {
                if now > *prev {
                    shared.emit(&SdkEvent::RecordsDropped {
                        kind: *kind,
                        reason: *reason,
                        count: now - *prev,
                    });
                    *prev = now;
                }
            }
        }
    }
}

fn answer_waiters(shared: &Shared) {
    let waiters = std::mem::take(
        &mut *shared
            .flush_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    for w in waiters {
        let _ = w.send(());
    }
}

/// The flusher task: drains every flush interval, on a full batch or a
/// flush request, and a last time at shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let stopping = stop.borrow_and_update().is_some();
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(shared.opts.flush_interval) => {}
                () = shared.flush_wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        drain(&shared, &mut stop).await;
        shared.absorb();
        if shared.buffer.len() == 0 {
            answer_waiters(&shared);
        }
        report_drops(&shared);
        if stop.borrow().is_some() {
            // Records that arrived during the last drain are left for
            // `shutdown`, which drops and counts them; pending flushes end
            // (unsuccessfully) rather than wait for a flusher that is gone.
            shared
                .flush_waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use uuid::Uuid;

    fn gunzip(b: &[u8]) -> Value {
        let mut s = String::new();
        flate2::read::GzDecoder::new(b)
            .read_to_string(&mut s)
            .unwrap();
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn records_have_the_data_model_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let e = Exposure::new("u1", "exp", "control", "treatment", true, at);
        let b = Batch::new(Records::Exposures(vec![e])).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            gunzip(&b.gzip),
            serde_json::json!([{"unit_id": "u1", "experiment": "exp", "variant": "control",
                "assigned_variant": "treatment", "opted_out": true, "ts": "2023-11-14T22:13:20.123Z"}])
        );
        let mut e = Exposure::new("u2", "exp", "control", "control", false, at);
        e.attributes = Some(Box::new([
            ("platform".to_owned(), "mobile".to_owned()),
            ("country".to_owned(), "de".to_owned()),
        ]));
        let v = gunzip(&Batch::new(Records::Exposures(vec![e])).unwrap().gzip);
        assert_eq!(
            v[0]["attributes"],
            serde_json::json!({"country": "de", "platform": "mobile"})
        );
        let id = Uuid::now_v7();
        let ev = event(id, None, at);
        let v = gunzip(&Batch::new(Records::Events(vec![ev])).unwrap().gzip);
        assert_eq!(v[0]["event_id"], id.to_string());
        assert_eq!(v[0]["type"], "purchase");
        assert_eq!(v[0]["value"], 9.5);
        assert!(v[0].get("properties").is_none());
        assert_eq!(id.get_version_num(), 7);
    }

    fn event(id: Uuid, properties: Option<Value>, at: SystemTime) -> Event {
        Event {
            event_id: id,
            unit_id: "u1".into(),
            kind: "purchase".into(),
            value: Some(9.5),
            properties: properties.and_then(|p| p.as_object().cloned()),
            at,
        }
    }

    #[test]
    fn nested_properties_are_flattened_to_dotted_keys() {
        let props = serde_json::json!({"plan": "pro", "cart": {"items": 3, "coupon": {"code": "X"}},
            "tags": ["a", 1], "gift": true, "none": null});
        let v = gunzip(
            &Batch::new(Records::Events(vec![event(
                Uuid::now_v7(),
                Some(props),
                SystemTime::now(),
            )]))
            .unwrap()
            .gzip,
        );
        assert_eq!(
            v[0]["properties"],
            serde_json::json!({"plan": "pro", "cart.items": 3, "cart.coupon.code": "X",
                "tags": "[\"a\",1]", "gift": true, "none": null})
        );
    }

    #[test]
    fn a_subset_keeps_the_chosen_records_in_order() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let at = SystemTime::now();
        let b = Batch::new(Records::Events(
            ids.iter().map(|id| event(*id, None, at)).collect(),
        ))
        .unwrap();
        let sub = b.subset(&[1, 3]).unwrap();
        assert_eq!(sub.len(), 2);
        let v = gunzip(&sub.gzip);
        assert_eq!(v[0]["event_id"], ids[1].to_string());
        assert_eq!(v[1]["event_id"], ids[3].to_string());
        assert!(sub.subset(&[]).is_none());
    }

    #[test]
    fn acknowledgements_are_read_leniently() {
        assert_eq!(
            parse_ack(
                br#"{"accepted": 3, "duplicates": 1, "rejected": [{"index": 0}]}"#,
                5
            ),
            Ack {
                accepted: 3,
                duplicates: 1,
                rejected: 1,
                ..Ack::default()
            }
        );
        assert_eq!(
            parse_ack(b"not json", 4),
            Ack {
                accepted: 4,
                ..Ack::default()
            }
        );
        // Records refused for now are told apart, out-of-range indices ignored.
        let ack = parse_ack(
            br#"{"accepted": 1, "duplicates": 0, "rejected": [
                {"index": 3, "reason": "shed under load, retry later", "retryable": true},
                {"index": 0, "reason": "missing field unit_id"},
                {"index": 1, "reason": "shed under load, retry later", "retryable": true},
                {"index": 9, "retryable": true}]}"#,
            4,
        );
        assert_eq!((ack.rejected, ack.retry), (4, vec![1, 3]));
        assert!(Batch::new(Records::Exposures(Vec::new())).is_none());
    }
}
