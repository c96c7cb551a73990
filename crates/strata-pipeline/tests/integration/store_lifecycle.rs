//! Retention and right-to-deletion on the Parquet store.

use std::collections::HashMap;
use std::time::Duration;

use strata_pipeline::{Batch, Outcome, RetentionPolicy, Sink};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_events_and_exposures_of_ended_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Events on days 0..20, 10 per day.
    let mut records = Vec::new();
    for d in 0..20i64 {
        for i in 0..10 {
            records.push(event(
                &format!("e{d}-{i}"),
                &format!("u{i}"),
                "t",
                DAY0 + d * DAY + i,
                None,
            ));
        }
    }
    // Exposures on days 0..4 of an experiment that ended on day 5, of one
    // still running, and of one that ended early but got a late exposure.
    for d in 0..4i64 {
        for i in 0..5 {
            records.push(exposure(&format!("u{i}"), "ended", "a", DAY0 + d * DAY));
            records.push(exposure(&format!("u{i}"), "running", "a", DAY0 + d * DAY));
        }
    }
    records.push(exposure("late", "ended", "a", DAY0 + 30 * DAY));
    store.append(Batch::from(records)).await.unwrap();
    store.compact_now().await.unwrap();
    let events_dir = dir.path().join("parquet/kind=events");
    let exposures_dir = dir.path().join("parquet/kind=exposures");
    assert_eq!(rows(&events_dir), 200);
    assert_eq!(rows(&exposures_dir), 41);

    let policy = RetentionPolicy {
        experiment_ends: HashMap::from([("ended".to_string(), DAY0 + 5 * DAY)]),
        ..RetentionPolicy::default()
    };
    // Day 100: events of days 0..=9 are 90 days old once day 9 has ended.
    let now = DAY0 + 100 * DAY;
    let r = store.apply_retention(now, &policy).await.unwrap();
    assert_eq!(r.event_dates_removed, 10);
    assert_eq!(rows(&events_dir), 100);
    // "ended" ended on day 5: its exposures expire on day 95; the late one
    // (day 30) is kept until day 120. "running" falls back to 365 days.
    assert_eq!(r.exposure_rows_removed, 20);
    assert_eq!(
        column(&exposures_dir, "experiment")
            .iter()
            .filter(|e| *e == "ended")
            .count(),
        1
    );
    assert_eq!(rows(&exposures_dir), 21);
    // Idempotent.
    let again = store.apply_retention(now, &policy).await.unwrap();
    assert_eq!(again.event_dates_removed + again.exposure_rows_removed, 0);
    // A year later everything is gone, and emptied directories with it.
    let later = RetentionPolicy {
        exposures_fallback_age: Duration::from_secs(200 * 86_400),
        ..policy
    };
    store
        .apply_retention(DAY0 + 400 * DAY, &later)
        .await
        .unwrap();
    assert_eq!(rows(&events_dir) + rows(&exposures_dir), 0);
    assert_eq!(std::fs::read_dir(&exposures_dir).unwrap().count(), 0);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_unit_removes_it_from_log_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let batch = |tag: &str| {
        let mut v = Vec::new();
        for i in 0..50 {
            let unit = format!("u{}", i % 10);
            v.push(event(
                &format!("{tag}-{i}"),
                &unit,
                "t",
                DAY0 + (i as i64 % 3) * DAY,
                None,
            ));
        }
        for i in 0..10 {
            v.push(exposure(&format!("u{i}"), &format!("exp-{tag}"), "a", DAY0));
        }
        v
    };
    store.append(Batch::from(batch("a"))).await.unwrap();
    store.compact_now().await.unwrap();
    // Not compacted yet: in the log only.
    store.append(Batch::from(batch("b"))).await.unwrap();
    let r = store.delete_unit("u3").await.unwrap();
    assert_eq!(r.events_removed, 10);
    assert_eq!(r.exposures_removed, 2);
    assert_eq!(r.log_records_compacted, 6);
    assert!(r.files_rewritten + r.files_deleted > 0);
    let parquet = dir.path().join("parquet");
    assert!(!column(&parquet, "unit_id").contains(&"u3".to_string()));
    assert_eq!(rows(&parquet), 120 - 12);
    // Nothing of the unit is left in the log either.
    assert_eq!(store.pressure().backlog_bytes, 0);
    let again = store.delete_unit("u3").await.unwrap();
    assert_eq!(again.events_removed + again.exposures_removed, 0);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_stored_once_and_deleted_with_the_user_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Two devices of u1 (one signs in twice), one of u2.
    let aliases = vec![
        alias("d1", "u1", DAY0),
        alias("d2", "u1", DAY0 + HOUR),
        alias("d3", "u2", DAY0 + 2 * DAY),
    ];
    let outcomes = store.append(Batch::from(aliases)).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Accepted));
    // The same pair again, even at another time, is a duplicate.
    let again = store
        .append(Batch::from(vec![alias("d1", "u1", DAY0 + DAY)]))
        .await
        .unwrap();
    assert_eq!(again, [Outcome::Duplicate]);
    let mut records = Vec::new();
    for (i, unit) in ["d1", "d2", "d3", "u1", "u2", "d9"].iter().enumerate() {
        records.push(exposure(unit, "exp", "a", DAY0));
        for j in 0..3 {
            records.push(event(
                &format!("{unit}-{j}"),
                unit,
                "t",
                DAY0 + i as i64,
                None,
            ));
        }
    }
    store.append(Batch::from(records)).await.unwrap();
    let report = store.compact_now().await.unwrap();
    assert_eq!(report.aliases, 3);
    let parquet = dir.path().join("parquet");
    let aliases_dir = parquet.join("kind=aliases");
    assert_eq!(column(&aliases_dir, "anonymous_id"), ["d1", "d2", "d3"]);
    assert_eq!(column(&aliases_dir, "user_id"), ["u1", "u1", "u2"]);
    // Two UTC days of aliases: two date directories.
    assert_eq!(std::fs::read_dir(&aliases_dir).unwrap().count(), 2);

    // Deleting the user deletes its devices' records and the aliases.
    let r = store.delete_unit("u1").await.unwrap();
    assert_eq!(r.linked_ids, ["d1", "d2"]);
    assert_eq!((r.exposures_removed, r.events_removed), (3, 9));
    assert_eq!(r.aliases_removed, 2);
    let units = |kind: &str| column(&parquet.join(format!("kind={kind}")), "unit_id");
    assert_eq!(units("exposures"), ["d3", "d9", "u2"]);
    assert_eq!(units("events").len(), 9);
    assert_eq!(column(&aliases_dir, "anonymous_id"), ["d3"]);

    // Deleting a device leaves the user it signed in as.
    let r = store.delete_unit("d3").await.unwrap();
    assert!(r.linked_ids.is_empty());
    assert_eq!((r.exposures_removed, r.aliases_removed), (1, 1));
    assert_eq!(units("exposures"), ["d9", "u2"]);
    assert_eq!(rows(&aliases_dir), 0);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_aliases_past_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let records: Vec<_> = (0..10i64)
        .map(|d| alias(&format!("d{d}"), "u", DAY0 + d * DAY))
        .collect();
    store.append(Batch::from(records)).await.unwrap();
    store.compact_now().await.unwrap();
    let aliases_dir = dir.path().join("parquet/kind=aliases");
    assert_eq!(rows(&aliases_dir), 10);
    let policy = RetentionPolicy {
        aliases_max_age: Duration::from_secs(30 * 86_400),
        ..RetentionPolicy::default()
    };
    // Day 35: days 0..=4 ended 30 days ago or more.
    let r = store
        .apply_retention(DAY0 + 35 * DAY, &policy)
        .await
        .unwrap();
    assert_eq!(r.alias_dates_removed, 5);
    assert_eq!(
        column(&aliases_dir, "anonymous_id"),
        ["d5", "d6", "d7", "d8", "d9"]
    );
    // The default keeps them a year.
    let r = store
        .apply_retention(DAY0 + 35 * DAY, &RetentionPolicy::default())
        .await
        .unwrap();
    assert_eq!(r.alias_dates_removed, 0);
    store.shutdown().await;
}
