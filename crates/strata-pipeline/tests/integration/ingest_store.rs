//! The ingestion endpoints over the durable sinks: the local store (dedup
//! across a restart, forced backlog) and NATS JetStream (ingest → stream →
//! compactor → Parquet, the same rows as the local mode).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_pipeline::http::{Backpressure, IngestConfig};
use strata_pipeline::nats::{CompactorOptions, JetStreamSink, NatsCompactor, NatsOptions};
use strata_pipeline::parquet::{list_parquet_files, read_file, string_column, ts_column};
use strata_pipeline::{LocalStore, MergeOptions, StoreOptions};

use crate::ingest_common::{event, exposure, serve, TOKEN};

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn manual() -> StoreOptions {
    StoreOptions {
        background_compaction: false,
        ..StoreOptions::default()
    }
}

/// Rows of the Parquet tree under `root`, as (partition directory relative
/// to root, identifying columns), sorted; `received_at` is left out because
/// it is the clock of whichever server took the record.
fn rows(root: &Path) -> BTreeSet<(String, String, String, String, i64)> {
    let mut out = BTreeSet::new();
    for file in list_parquet_files(root).unwrap() {
        let dir = file
            .parent()
            .unwrap()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (_, batches) = read_file(&file).unwrap();
        for b in batches {
            let events = dir.starts_with("kind=events");
            let (a, c, d) = if events {
                ("event_id", "unit_id", "type")
            } else {
                ("unit_id", "experiment", "variant")
            };
            let (a, c, d) = (
                string_column(&b, a, &file).unwrap(),
                string_column(&b, c, &file).unwrap(),
                string_column(&b, d, &file).unwrap(),
            );
            let ts = ts_column(&b, "ts", &file).unwrap();
            for i in 0..b.num_rows() {
                assert!(
                    out.insert((
                        dir.clone(),
                        a.value(i).to_owned(),
                        c.value(i).to_owned(),
                        d.value(i).to_owned(),
                        ts.value(i)
                    )),
                    "duplicate row in {}",
                    file.display()
                );
            }
        }
    }
    out
}

/// The batches both modes receive: events and exposures, then the same
/// batches retried, then a batch mixing old and new records.
fn batches() -> Vec<(&'static str, Value)> {
    let events: Vec<Value> = (0..200)
        .map(|i| {
            event(
                &format!("ev-{i}"),
                &format!("unit-{}", i % 37),
                if i % 3 == 0 { "purchase" } else { "page_view" },
            )
        })
        .collect();
    let exposures: Vec<Value> = (0..50)
        .map(|i| {
            exposure(
                &format!("unit-{i}"),
                "exp_checkout",
                if i % 2 == 0 { "control" } else { "treatment" },
            )
        })
        .collect();
    vec![
        ("/collect/v1/events", Value::Array(events[..150].to_vec())),
        ("/collect/v1/exposures", Value::Array(exposures.clone())),
        ("/collect/v1/events", Value::Array(events[..150].to_vec())),
        ("/collect/v1/exposures", Value::Array(exposures)),
        ("/collect/v1/events", Value::Array(events[100..].to_vec())),
    ]
}

/// (accepted, duplicates) the batches above must produce.
const EXPECTED: [(u64, u64); 5] = [(150, 0), (50, 0), (0, 150), (0, 50), (50, 50)];

#[tokio::test]
async fn local_store_deduplicates_a_retried_batch_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), manual()).await.unwrap();
    let srv = serve(store.clone(), IngestConfig::default()).await;
    let first = json!([
        event("a1", "u1", "t"),
        event("a2", "u2", "t"),
        exposure("u1", "exp", "a")
    ]);
    let (status, body) = post(
        &srv.base,
        "/collect/v1/events",
        &json!([first[0], first[1]]),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    let (_, body) = post(&srv.base, "/collect/v1/exposures", &json!([first[2]])).await;
    assert_eq!(body["accepted"], 1);
    drop(srv);
    store.shutdown().await;
    drop(store);

    // Reopen: the acknowledged records are still there, a retry is a
    // duplicate.
    let store = LocalStore::open(dir.path(), manual()).await.unwrap();
    let srv = serve(store.clone(), IngestConfig::default()).await;
    let (status, body) = post(
        &srv.base,
        "/collect/v1/events",
        &json!([first[0], first[1], event("a3", "u3", "t")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(1), Some(2))
    );
    let (_, body) = post(&srv.base, "/collect/v1/exposures", &json!([first[2]])).await;
    assert_eq!(body["duplicates"], 1);
    store.compact_now().await.unwrap();
    let stored = rows(&dir.path().join("parquet"));
    let ids: Vec<&str> = stored
        .iter()
        .filter(|r| r.0.starts_with("kind=events"))
        .map(|r| r.1.as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{stored:?}");
    assert_eq!(stored.len(), 4, "{stored:?}");
    store.shutdown().await;
}

#[tokio::test]
async fn local_store_backlog_turns_into_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), manual()).await.unwrap();
    let cfg = IngestConfig {
        backpressure: Backpressure {
            max_backlog_bytes: 4096,
            ..Backpressure::default()
        },
        ..IngestConfig::default()
    };
    let srv = serve(store.clone(), cfg).await;
    // Fill the un-compacted log past the threshold (no background compactor).
    let mut accepted = 0;
    let mut status = 200;
    for round in 0..100 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                event(
                    &format!("b{round}-{i}"),
                    &format!("u{round}-{i}"),
                    "purchase",
                )
            })
            .collect();
        let (s, body) = post(&srv.base, "/collect/v1/events", &Value::Array(batch)).await;
        status = s;
        if s != 200 {
            break;
        }
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(
        status, 503,
        "a backlog above the threshold must refuse events"
    );
    assert!(accepted > 0);
    // Compaction drains the backlog and ingestion resumes.
    store.compact_now().await.unwrap();
    let (s, _) = post(
        &srv.base,
        "/collect/v1/events",
        &json!([event("after", "u", "purchase")]),
    )
    .await;
    assert_eq!(s, 200);
    store.shutdown().await;
}

/// Runs the batches against a server over `sink`, checking the answers.
async fn ingest_all(base: &str, batches: &[(&'static str, Value)]) {
    for ((path, body), (acc, dup)) in batches.iter().zip(EXPECTED) {
        let (status, answer) = post(base, path, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
            (Some(acc), Some(dup)),
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn jetstream_mode_produces_the_same_rows_as_the_local_mode() {
    let Ok(url) = std::env::var("STRATA_TEST_NATS_URL") else {
        eprintln!("\n!!!!!!!! SKIP jetstream_mode_produces_the_same_rows_as_the_local_mode: STRATA_TEST_NATS_URL is not set !!!!!!!!\n");
        return;
    };
    // The same batches, timestamps included, go to both modes.
    let batches = batches();
    // Local mode.
    let local_dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(local_dir.path(), manual()).await.unwrap();
    let srv = serve(store.clone(), IngestConfig::default()).await;
    ingest_all(&srv.base, &batches).await;
    store.compact_now().await.unwrap();
    store.shutdown().await;
    drop(srv);
    let local = rows(&local_dir.path().join("parquet"));
    assert_eq!(local.len(), 200 + 50);

    // JetStream mode, on a stream of its own.
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let opts = NatsOptions {
        stream: format!("STRATA_TEST_{unique}"),
        subject_prefix: format!("strata_test_{unique}"),
        durable: "compactor".into(),
        ..NatsOptions::default()
    };
    let sink = JetStreamSink::connect(&url, opts.clone()).await.unwrap();
    let record = strata_pipeline::Record::Event(strata_pipeline::Event {
        event_id: "x".into(),
        unit_id: "unit-1".into(),
        event_type: "t".into(),
        ts: 0,
        received_at: 0,
        value: None,
        properties: Default::default(),
        is_bot: false,
        opted_out: false,
    });
    let subject_of_unit = sink.subject(&record.view());
    assert_eq!(
        subject_of_unit,
        format!(
            "strata_test_{unique}.events.{:02}",
            strata_pipeline::user_partition("unit-1", opts.partitions)
        )
    );
    let srv = serve(Arc::new(sink), IngestConfig::default()).await;
    ingest_all(&srv.base, &batches).await;
    let nats_dir = tempfile::tempdir().unwrap();
    let root = nats_dir.path().join("parquet");
    let mut compactor = NatsCompactor::open(
        &url,
        &root,
        opts.clone(),
        CompactorOptions {
            max_messages: 120,
            max_wait: Duration::from_millis(300),
            merge: Some(MergeOptions {
                min_files: 2,
                small_bytes: 1 << 20,
                row_group_rows: 10_000,
            }),
            // Merged below by hand, after every round.
            merge_every: Duration::MAX,
            purge_acknowledged: false,
        },
    )
    .await
    .unwrap();
    let mut consumed = 0;
    for _ in 0..20 {
        consumed += compactor.run_once().await.unwrap().messages;
        if consumed >= 250 {
            break;
        }
    }
    assert_eq!(
        consumed, 250,
        "each accepted record is one message; duplicates never reached the stream"
    );
    // Nothing more to consume.
    assert_eq!(compactor.run_once().await.unwrap().messages, 0);
    assert!(
        rows(&root) == local,
        "jetstream and local parquet rows differ"
    );

    // The rounds' small files are merged, every row kept once.
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = list_parquet_files(&root)
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let merged = compactor.merge_now().await.unwrap();
    assert!(merged.parquet_merged > 0, "{merged:?}");
    let after = list_parquet_files(&root).unwrap();
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    assert!(after.iter().all(|p| p
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("nats-")));
    // Rows with their repeats (`rows` above is a set).
    let count = crate::common::rows;
    let total = count(&root);
    assert!(rows(&root) == local, "a merge changed the rows");
    // A crash between a merge's rename and its deletions leaves an input
    // beside the merged file; the next start finishes the merge.
    let (input, bytes) = before
        .iter()
        .find(|(p, _)| !after.contains(p))
        .expect("a merged input");
    std::fs::write(input, bytes).unwrap();
    assert!(count(&root) > total, "the input's rows are there twice");

    // A restarted compactor resumes after the acknowledged batches and
    // writes nothing twice.
    drop(compactor);
    let mut again = NatsCompactor::open(
        &url,
        &root,
        opts.clone(),
        CompactorOptions {
            max_messages: 100,
            max_wait: Duration::from_millis(200),
            ..CompactorOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(again.run_once().await.unwrap().messages, 0);
    assert!(
        rows(&root) == local,
        "jetstream and local parquet rows differ"
    );
    assert_eq!(count(&root), total, "the interrupted merge was finished");

    // Clean up the stream.
    let client = async_nats::connect(&url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&opts.stream)
        .await;
}

/// The NATS server of `STRATA_TEST_NATS_URL`, or none (said loudly).
fn nats_url(test: &str) -> Option<String> {
    let url = std::env::var("STRATA_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("\n!!!!!!!! SKIP {test}: STRATA_TEST_NATS_URL is not set !!!!!!!!\n");
    }
    url
}

/// A stream of the test's own, its consumer `compactor`.
fn own_stream(name: &str) -> NatsOptions {
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    NatsOptions {
        stream: format!("STRATA_{}_{unique}", name.to_uppercase()),
        subject_prefix: format!("strata_{name}_{unique}"),
        durable: "compactor".into(),
        ..NatsOptions::default()
    }
}

/// Events `e<i>` of units `u<i % units>`, one batch.
fn event_batch(range: std::ops::Range<usize>, units: usize) -> strata_pipeline::Batch {
    let mut b = strata_pipeline::Batch::with_capacity(range.len(), 0);
    for i in range {
        let r = strata_pipeline::Record::Event(strata_pipeline::Event {
            event_id: format!("e{i}"),
            unit_id: format!("u{}", i % units),
            event_type: "t".into(),
            ts: 1_700_000_000_000_000,
            received_at: 1_700_000_000_000_000,
            value: None,
            properties: Default::default(),
            is_bot: false,
            opted_out: false,
        });
        b.push(&r.view());
    }
    b
}

/// A compactor that stopped holding a delivered batch is taken over at once
/// (not after JetStream's acknowledgement wait), `drain` compacts every
/// message the stream held, acknowledged messages are purged, a record
/// retried after the purge is still a duplicate, and a [`StreamStore`]
/// compacts only while its gate is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_store_takes_over_drains_purges_and_compacts_only_behind_its_gate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use strata_pipeline::{Sink, StreamStore, StreamStoreOptions};
    let Some(url) =
        nats_url("a_stream_store_takes_over_drains_purges_and_compacts_only_behind_its_gate")
    else {
        return;
    };
    let nats = own_stream("takeover");
    let batch = |range| event_batch(range, 7);
    let sink = JetStreamSink::connect(&url, nats.clone()).await.unwrap();
    sink.append(batch(0..50)).await.unwrap();

    // A "compactor" that fetched a batch and died before acknowledging it.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&nats.stream).await.unwrap();
    {
        use futures_util::StreamExt as _;
        let dead: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(nats.durable.clone()),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut m = dead.fetch().max_messages(30).messages().await.unwrap();
        let mut n = 0;
        while let Some(msg) = m.next().await {
            msg.unwrap();
            n += 1;
        }
        assert_eq!(n, 30, "the dead compactor holds 30 unacknowledged");
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("parquet");
    let open = AtomicBool::new(false);
    let open = Arc::new(open);
    let gate = open.clone();
    let store = StreamStore::open(
        StreamStoreOptions {
            url: url.clone(),
            nats: nats.clone(),
            compactor: CompactorOptions {
                max_wait: Duration::from_millis(200),
                ..CompactorOptions::default()
            },
            parquet_dir: root.clone(),
            row_group_rows: 10_000,
            mirror: None,
        },
        Arc::new(move || gate.load(Ordering::Relaxed)),
    )
    .await
    .unwrap();
    // Gate closed: nothing is compacted, and compaction is refused.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!store.is_compacting());
    let refused = store.compact_now().await.unwrap_err().to_string();
    assert!(refused.contains("jobs leader"), "{refused}");
    assert!(list_parquet_files(&root).unwrap_or_default().is_empty());

    // Gate open: the store takes the dead one's batch over and drains all.
    open.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let r = store.compact_now().await.unwrap();
    sink.append(batch(50..60)).await.unwrap();
    let r2 = store.compact_now().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}: the dead compactor's batch waited for redelivery",
        started.elapsed()
    );
    let compacted = crate::common::rows(&root);
    assert_eq!(
        compacted, 60,
        "first drain {r:?}, second {r2:?}: each message once"
    );
    // Purged: the stream holds nothing compacted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = js
        .get_stream(&nats.stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 0, "{:?}", info.state);
    // A retry after the purge is a duplicate.
    let again = sink.append(batch(0..60)).await.unwrap();
    assert!(
        again
            .iter()
            .all(|o| *o == strata_pipeline::Outcome::Duplicate),
        "{again:?}"
    );

    // Gate closed again: the store gives the compactor up.
    open.store(false, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.is_compacting() {
        assert!(std::time::Instant::now() < deadline, "still compacting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.shutdown().await;
    let _ = js.delete_stream(&nats.stream).await;
}

/// A round that fails after fetching a batch (here: its Parquet cannot be
/// written) leaves nothing acknowledged unwritten: the next round delivers
/// that batch again instead of acknowledging it with a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_compaction_round_is_delivered_again_not_acknowledged_unwritten() {
    use strata_pipeline::Sink;
    let Some(url) =
        nats_url("a_failed_compaction_round_is_delivered_again_not_acknowledged_unwritten")
    else {
        return;
    };
    let nats = own_stream("failed");
    let batch = |range| event_batch(range, usize::MAX);
    let sink = JetStreamSink::connect(&url, nats.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("parquet");
    let mut compactor = NatsCompactor::open(
        &url,
        &root,
        nats.clone(),
        CompactorOptions {
            max_wait: Duration::from_millis(200),
            ..CompactorOptions::default()
        },
    )
    .await
    .unwrap();
    sink.append(batch(0..10)).await.unwrap();
    // A file where the events' directory must be: the write fails.
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("kind=events"), b"in the way").unwrap();
    assert!(compactor.run_once().await.is_err());
    std::fs::remove_file(root.join("kind=events")).unwrap();
    sink.append(batch(10..25)).await.unwrap();
    let r = compactor.drain().await.unwrap();
    assert_eq!(crate::common::rows(&root), 25, "{r:?}");
    assert_eq!(compactor.acknowledged(), 25);
    let client = async_nats::connect(&url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&nats.stream)
        .await;
}

/// Two stores whose gates are both open on one Parquet tree: only one
/// compacts (the tree's writer lock), and the other takes over when it
/// stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_never_write_one_tree_at_once() {
    use strata_pipeline::{Sink, StreamStore, StreamStoreOptions};
    let Some(url) = nats_url("two_stores_never_write_one_tree_at_once") else {
        return;
    };
    let nats = own_stream("twowriters");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("parquet");
    let open = || {
        StreamStore::open(
            StreamStoreOptions {
                url: url.clone(),
                nats: nats.clone(),
                compactor: CompactorOptions {
                    max_wait: Duration::from_millis(200),
                    ..CompactorOptions::default()
                },
                parquet_dir: root.clone(),
                row_group_rows: 10_000,
                mirror: None,
            },
            Arc::new(|| true),
        )
    };
    let first = open().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !first.is_compacting() {
        assert!(std::time::Instant::now() < deadline, "never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = open().await.unwrap();
    second.append(event_batch(0..30, 5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!second.is_compacting(), "two writers of one tree");
    let refused = second.compact_now().await.unwrap_err().to_string();
    assert!(refused.contains("jobs leader"), "{refused}");
    first.compact_now().await.unwrap();
    first.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !second.is_compacting() {
        assert!(std::time::Instant::now() < deadline, "never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.append(event_batch(30..40, 5)).await.unwrap();
    second.compact_now().await.unwrap();
    assert_eq!(crate::common::rows(&root), 40);
    second.shutdown().await;
    let client = async_nats::connect(&url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&nats.stream)
        .await;
}
