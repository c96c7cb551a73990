//! Crash safety of the event pipeline through `strata serve`: four clients
//! send batches of events and exposures while the server is killed with
//! SIGKILL at random moments (a fixed seed) and restarted on the same data
//! directory; each client resends a batch until it is acknowledged. After
//! `strata compact`, every acknowledged record is in Parquet exactly once,
//! and nothing that was never sent is.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::serve::{now_ms, started_experiment, strata_ok, token, Served};

pub(crate) const SEED: u64 = 0x5EED_0006;
const KILLS: usize = 12;
pub(crate) const CLIENTS: u64 = 4;

/// splitmix64: the seeded schedule of batch sizes, units and kills.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients sent and what the server acknowledged: event ids and
/// exposure units (each exposure has a unit of its own).
#[derive(Default)]
pub(crate) struct Ledger {
    sent_events: HashSet<String>,
    acked_events: HashSet<String>,
    sent_exposures: HashSet<String>,
    acked_exposures: HashSet<String>,
}

pub(crate) struct Shared {
    /// Where the clients send.
    pub(crate) base: Mutex<String>,
    key: String,
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
    /// Attempts that failed (refused connection, reset, 5xx) and were retried.
    retries: AtomicU64,
}

impl Shared {
    pub(crate) fn new(base: &str, key: String) -> Arc<Self> {
        Arc::new(Self {
            base: Mutex::new(base.to_owned()),
            key,
            stop: AtomicBool::new(false),
            ledger: Mutex::default(),
            retries: AtomicU64::new(0),
        })
    }

    /// Starts the clients.
    pub(crate) fn clients(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..CLIENTS)
            .map(|i| tokio::spawn(client(i, self.clone())))
            .collect()
    }

    /// Stops the clients once each has its last batch acknowledged.
    pub(crate) async fn stop(&self, clients: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client");
        }
    }

    /// Checks the Parquet tree under `root` against what was sent and
    /// acknowledged: every acknowledged record exactly once, nothing never
    /// sent, and the interruptions were real (at least `kills` attempts
    /// retried).
    pub(crate) fn verify(&self, root: &Path, kills: usize) {
        let (events, exposures) = stored(root);
        let l = self.ledger.lock().unwrap();
        eprintln!(
            "{} events and {} exposures acknowledged, {} attempts retried",
            l.acked_events.len(),
            l.acked_exposures.len(),
            self.retries.load(Ordering::Relaxed)
        );
        assert!(
            self.retries.load(Ordering::Relaxed) >= kills as u64,
            "the kills interrupted traffic"
        );
        assert!(
            l.acked_events.len() > 1000,
            "{} events",
            l.acked_events.len()
        );
        for (what, stored, sent, acked) in [
            ("events", &events, &l.sent_events, &l.acked_events),
            (
                "exposures",
                &exposures,
                &l.sent_exposures,
                &l.acked_exposures,
            ),
        ] {
            let unique: HashSet<String> = stored.iter().cloned().collect();
            assert_eq!(unique.len(), stored.len(), "{what} stored twice");
            let lost: Vec<_> = acked.difference(&unique).take(5).collect();
            assert!(lost.is_empty(), "acknowledged {what} lost: {lost:?}");
            let invented: Vec<_> = unique.difference(sent).take(5).collect();
            assert!(invented.is_empty(), "{what} never sent: {invented:?}");
            // Every batch was resent until acknowledged.
            assert_eq!(acked, sent, "{what}");
        }
    }
}

/// One batch of 1–200 events, or every fifth batch exposures.
fn batch(client: u64, seq: &mut u64, rng: &mut Rng) -> (&'static str, Vec<String>, Value) {
    let n = 1 + rng.below(200);
    let now = now_ms();
    let exposures = rng.below(5) == 0;
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for _ in 0..n {
        *seq += 1;
        if exposures {
            let unit = format!("c{client}-x{seq}");
            records.push(json!({"unit_id": unit, "experiment": "exp_crash",
                "variant": if *seq % 2 == 0 { "control" } else { "treatment" }, "ts": now}));
            ids.push(unit);
        } else {
            let id = format!("c{client}-e{seq}");
            records.push(
                json!({"event_id": id, "unit_id": format!("u{}", rng.below(100_000)),
                "type": "purchase", "ts": now, "value": rng.below(100)}),
            );
            ids.push(id);
        }
    }
    let kind = if exposures { "exposures" } else { "events" };
    (kind, ids, Value::Array(records))
}

/// Sends batches until told to stop; each one until it is acknowledged.
async fn client(id: u64, shared: Arc<Shared>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rng = Rng(SEED ^ (id + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut seq = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let (kind, ids, body) = batch(id, &mut seq, &mut rng);
        {
            let mut l = shared.ledger.lock().unwrap();
            let sent = if kind == "events" {
                &mut l.sent_events
            } else {
                &mut l.sent_exposures
            };
            sent.extend(ids.iter().cloned());
        }
        loop {
            let url = format!("{}/collect/v1/{kind}", shared.base.lock().unwrap());
            let resp = http
                .post(url)
                .bearer_auth(&shared.key)
                .json(&body)
                .send()
                .await;
            let ack = match resp {
                Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                Ok(r) if r.status().is_server_error() || r.status() == 429 => None,
                Ok(r) => {
                    let status = r.status();
                    panic!("{kind}: {status} {}", r.text().await.unwrap_or_default())
                }
                Err(_) => None,
            };
            let Some(ack) = ack else {
                // Down, killed mid-request, or the answer was lost: resend
                // the same records.
                shared.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let stored =
                ack["accepted"].as_u64().unwrap_or(0) + ack["duplicates"].as_u64().unwrap_or(0);
            assert_eq!(stored, ids.len() as u64, "{kind}: {ack}");
            let mut l = shared.ledger.lock().unwrap();
            let acked = if kind == "events" {
                &mut l.acked_events
            } else {
                &mut l.acked_exposures
            };
            acked.extend(ids);
            break;
        }
    }
}

/// Event ids and exposure units in the Parquet files under `root`, with
/// repeats.
pub(crate) fn stored(root: &Path) -> (Vec<String>, Vec<String>) {
    use strata_pipeline::parquet::{list_parquet_files, read_file, string_column};
    let (mut events, mut exposures) = (Vec::new(), Vec::new());
    for path in list_parquet_files(root).unwrap() {
        let (_, batches) = read_file(&path).unwrap();
        for b in &batches {
            if b.column_by_name("experiment").is_some() {
                let units = string_column(b, "unit_id", &path).unwrap();
                exposures.extend((0..b.num_rows()).map(|i| units.value(i).to_owned()));
            } else {
                let ids = string_column(b, "event_id", &path).unwrap();
                events.extend((0..b.num_rows()).map(|i| ids.value(i).to_owned()));
            }
        }
    }
    (events, exposures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let key = token(&dir, &["--kind", "ingest", "--name", "crash-test"]);
    let mut served = Served::start_in_runtime(&dir);
    started_experiment(&served.base, &dir, "exp_crash", &["control", "treatment"]).await;
    let shared = Shared::new(&served.base, key);
    let clients = shared.clients();
    let mut rng = Rng(SEED);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
        tokio::task::block_in_place(|| served.kill());
        served = Served::start_in_runtime(&dir);
        *shared.base.lock().unwrap() = served.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop(clients).await;
    tokio::task::block_in_place(|| served.terminate());

    strata_ok([Path::new("compact"), Path::new("--data-dir"), &dir]);
    shared.verify(&dir.join("pipeline/parquet"), KILLS);
}

/// A batch acknowledged before a SIGKILL, or before a SIGTERM, is a
/// duplicate when it is sent again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_a_duplicate_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let key = token(&dir, &["--kind", "ingest"]);
    let http = reqwest::Client::new();
    let now = now_ms();
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"event_id": format!("r-{i}"), "unit_id": format!("u{i}"), "type": "t", "ts": now}))
        .collect();
    let exposures: Vec<Value> = (0..50)
        .map(|i| json!({"unit_id": format!("u{i}"), "experiment": "e", "variant": "a", "ts": now}))
        .collect();
    let http = &http;
    let key = key.as_str();
    // (accepted, duplicates) of the events, then of the exposures.
    let send_both = |base: String| {
        let bodies = [("events", events.clone()), ("exposures", exposures.clone())];
        async move {
            let mut out = Vec::new();
            for (kind, body) in bodies {
                let r = http
                    .post(format!("{base}/collect/v1/{kind}"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let v: Value = r.json().await.unwrap();
                out.push((
                    v["accepted"].as_u64().unwrap(),
                    v["duplicates"].as_u64().unwrap(),
                ));
            }
            out
        }
    };
    let served = Served::start_in_runtime(&dir);
    started_experiment(&served.base, &dir, "e", &["a", "b"]).await;
    assert_eq!(send_both(served.base.clone()).await, [(50, 0); 2]);
    tokio::task::block_in_place(|| served.kill());
    let served = Served::start_in_runtime(&dir);
    let again = send_both(served.base.clone()).await;
    assert_eq!(again, [(0, 50); 2], "after SIGKILL");
    tokio::task::block_in_place(|| served.terminate());
    let served = Served::start_in_runtime(&dir);
    let again = send_both(served.base.clone()).await;
    assert_eq!(again, [(0, 50); 2], "after SIGTERM");
    tokio::task::block_in_place(|| served.terminate());
}
