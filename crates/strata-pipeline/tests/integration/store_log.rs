//! The durable log through `LocalStore`: group commit, deduplication across
//! reopen and crash, torn tails, compaction.

use std::collections::HashSet;
use std::fs;

use strata_pipeline::log::{list_segments, segment_path, HEADER_LEN};
use strata_pipeline::store::OpenReport;
use strata_pipeline::{Batch, LocalStore, Outcome, Sink};

use crate::common::*;

fn metric(store: &LocalStore, line_prefix: &str) -> f64 {
    let mut out = String::new();
    store.render_metrics(&mut out);
    out.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_accept_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let tasks = 64;
    let batches = 10;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for b in 0..batches {
                // Every task sends ids 0..400 of its "client" t % 8: tasks
                // with the same client race on the same keys.
                let batch: Vec<_> = (0..40)
                    .map(|i| {
                        let id = format!("c{}-e{}", t % 8, b * 40 + i);
                        event(&id, &format!("u{i}"), "view", DAY0, None)
                    })
                    .collect();
                let ids: Vec<String> = (0..40)
                    .map(|i| format!("c{}-e{}", t % 8, b * 40 + i))
                    .collect();
                let out = store.append(Batch::from(batch)).await.unwrap();
                assert_eq!(out.len(), 40);
                for (id, o) in ids.into_iter().zip(out) {
                    if o == Outcome::Accepted {
                        accepted.push(id);
                    }
                }
            }
            accepted
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), distinct.len(), "a key was accepted twice");
    assert_eq!(distinct.len(), 8 * 400, "every key accepted once");
    let fsyncs = metric(&store, "strata_pipeline_log_fsyncs_total");
    assert!(
        fsyncs >= 1.0 && fsyncs < (tasks * batches) as f64,
        "{fsyncs} fsyncs for {} appends",
        tasks * batches
    );
    assert_eq!(
        metric(
            &store,
            "strata_pipeline_log_records_total{kind=\"event\",outcome=\"accepted\"}"
        ),
        3200.0
    );
    assert_eq!(
        metric(
            &store,
            "strata_pipeline_log_records_total{kind=\"event\",outcome=\"duplicate\"}"
        ),
        (tasks * batches * 40 - 3200) as f64
    );
    let report = store.compact_now().await.unwrap();
    assert_eq!(report.events, 3200);
    assert_eq!(rows(store.parquet_dir()), 3200);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_a_batch_and_exposures_per_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let out = store
        .append(Batch::from(vec![
            event("a", "u1", "t", DAY0, None),
            event("a", "u1", "t", DAY0 + 5, None),
            exposure("u1", "exp", "control", DAY0 + HOUR),
            exposure("u1", "exp", "control", DAY0 + 2 * HOUR),
            exposure("u1", "exp", "control", DAY0 + DAY),
            exposure("u1", "other", "control", DAY0 + HOUR),
            exposure("u2", "exp", "control", DAY0 + HOUR),
        ]))
        .await
        .unwrap();
    use Outcome::*;
    assert_eq!(
        out,
        vec![Accepted, Duplicate, Accepted, Duplicate, Accepted, Accepted, Accepted]
    );
    assert_eq!(store.append(Batch::from(vec![])).await.unwrap(), vec![]);
    store.shutdown().await;
    // After shutdown appends are refused, not lost silently.
    assert!(store
        .append(Batch::from(vec![event("b", "u", "t", DAY0, None)]))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_survives_reopen_and_crash_for_compacted_and_log_records() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<_> = (0..300)
        .map(|i| {
            event(
                &format!("e{i}"),
                &format!("u{}", i % 30),
                "buy",
                DAY0 + i,
                Some(1.0),
            )
        })
        .collect();
    let second: Vec<_> = (300..500)
        .map(|i| {
            event(
                &format!("e{i}"),
                &format!("u{}", i % 30),
                "buy",
                DAY0 + i,
                Some(1.0),
            )
        })
        .collect();
    let exposures: Vec<_> = (0..30)
        .map(|i| exposure(&format!("u{i}"), "exp", "a", DAY0 + i))
        .collect();
    {
        let store = open(dir.path()).await;
        assert!(store
            .append(Batch::from(first.clone()))
            .await
            .unwrap()
            .iter()
            .all(|o| *o == Outcome::Accepted));
        assert!(store
            .append(Batch::from(exposures.clone()))
            .await
            .unwrap()
            .iter()
            .all(|o| *o == Outcome::Accepted));
        // The first batch and the exposures reach Parquet (their keys go to
        // a key file); the second stays in the log.
        store.compact_now().await.unwrap();
        assert!(store
            .append(Batch::from(second.clone()))
            .await
            .unwrap()
            .iter()
            .all(|o| *o == Outcome::Accepted));
        // A crash: no shutdown, the store is just dropped.
        drop(store);
    }
    let (store, report): (_, OpenReport) = LocalStore::open_with_report(dir.path(), manual())
        .await
        .unwrap();
    assert_eq!(report.records_replayed, 200);
    assert_eq!(report.dedup_keys, 530);
    let mut retry = first.clone();
    retry.extend(second.clone());
    retry.extend(exposures.iter().map(|x| {
        // Same unit, experiment and day, another time: still a duplicate.
        let mut x = x.clone();
        if let strata_pipeline::Record::Exposure(e) = &mut x {
            e.ts += HOUR;
        }
        x
    }));
    let out = store.append(Batch::from(retry)).await.unwrap();
    assert!(out.iter().all(|o| *o == Outcome::Duplicate), "{out:?}");
    let fresh = store
        .append(Batch::from(vec![event("new", "u1", "buy", DAY0, None)]))
        .await
        .unwrap();
    assert_eq!(fresh, vec![Outcome::Accepted]);
    store.compact_now().await.unwrap();
    assert_eq!(rows(store.parquet_dir()), 300 + 30 + 200 + 1);
    store.shutdown().await;
    // And once more after everything is compacted: all from key files.
    let store = open(dir.path()).await;
    let out = store
        .append(Batch::from(vec![
            first[0].clone(),
            second[0].clone(),
            event("new", "u1", "buy", DAY0, None),
        ]))
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Duplicate; 3]);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_recovers_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = 50;
    {
        let store = open(dir.path()).await;
        for i in 0..n {
            // One append per record: one frame each, fsync'd in order.
            store
                .append(Batch::from(vec![event(
                    &format!("e{i}"),
                    "u",
                    "t",
                    DAY0 + i,
                    None,
                )]))
                .await
                .unwrap();
        }
        drop(store);
    }
    let log = dir.path().join("log");
    let ids = list_segments(&log).unwrap();
    let last = *ids.last().unwrap();
    let path = segment_path(&log, last);
    let len = fs::metadata(&path).unwrap().len();
    assert!(len > HEADER_LEN);
    // Cut the last frame in the middle (a torn write) and add junk that a
    // half-written next frame could leave.
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(len as usize - 7);
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe]);
    fs::write(&path, &bytes).unwrap();
    let (store, report) = LocalStore::open_with_report(dir.path(), manual())
        .await
        .unwrap();
    assert_eq!(report.records_replayed, n as u64 - 1);
    assert!(report.torn_bytes_truncated > 0);
    // The torn record's bytes are gone (in a real crash it would not have
    // been acknowledged yet): its retry is accepted, the others' are not.
    let out = store
        .append(Batch::from(vec![
            event(&format!("e{}", n - 1), "u", "t", DAY0, None),
            event("e0", "u", "t", DAY0, None),
        ]))
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Accepted, Outcome::Duplicate]);
    store.compact_now().await.unwrap();
    assert_eq!(rows(store.parquet_dir()), n as usize);
    let ids: Vec<String> = column(store.parquet_dir(), "event_id");
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), n as usize);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_and_compaction_deletes_them_and_is_idle_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for b in 0..40 {
        let batch: Vec<strata_pipeline::Record> = (0..100)
            .map(|i| {
                event(
                    &format!("e{b}-{i}"),
                    &format!("u{i}"),
                    "t",
                    DAY0 + b * DAY / 4,
                    None,
                )
            })
            .collect();
        store.append(Batch::from(batch)).await.unwrap();
    }
    let log = dir.path().join("log");
    assert!(
        list_segments(&log).unwrap().len() > 2,
        "64 KiB segments rotate"
    );
    let p = store.pressure();
    assert!(p.backlog_bytes > 100_000);
    assert!(p.compaction_lag.is_some());
    assert!(p.disk_free_bytes.unwrap() > 0);
    let r = store.compact_now().await.unwrap();
    assert_eq!(r.events, 4000);
    assert!(r.files >= 16, "several dates × partitions");
    assert_eq!(
        list_segments(&log).unwrap().len(),
        1,
        "only the new active segment is left"
    );
    let p = store.pressure();
    assert_eq!(p.backlog_bytes, 0);
    assert!(p.compaction_lag.is_none());
    let again = store.compact_now().await.unwrap();
    assert_eq!(again.events + again.exposures, 0);
    assert_eq!(rows(store.parquet_dir()), 4000);
    let dates: HashSet<_> = strata_pipeline::parquet::list_parquet_files(store.parquet_dir())
        .unwrap()
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(dates.len(), 10, "{dates:?}");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compactor_compacts_on_age() {
    let dir = tempfile::tempdir().unwrap();
    let opts = strata_pipeline::StoreOptions {
        compact_age: std::time::Duration::from_millis(200),
        compact_poll: std::time::Duration::from_millis(50),
        ..strata_pipeline::StoreOptions::default()
    };
    let store = LocalStore::open(dir.path(), opts).await.unwrap();
    store
        .append(Batch::from(vec![
            event("a", "u", "t", DAY0, None),
            exposure("u", "x", "a", DAY0),
        ]))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rows(store.parquet_dir()) < 2 || store.pressure().backlog_bytes > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "background compaction did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows(store.parquet_dir()), 2);
    store.shutdown().await;
}
