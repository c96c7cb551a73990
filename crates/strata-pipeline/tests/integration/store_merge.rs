//! Merging the small files compaction leaves behind: counts proportional to
//! data, every row once, readers holding a lease never see a merge.

use std::time::Duration;

use strata_pipeline::parquet::list_parquet_files;
use strata_pipeline::{Batch, LocalStore, MergeOptions, Outcome, Sink, StoreOptions};

use crate::common::*;

fn merging(min_files: usize) -> StoreOptions {
    StoreOptions {
        merge: Some(MergeOptions {
            min_files,
            small_bytes: 1 << 20,
            row_group_rows: 10_000,
        }),
        ..manual()
    }
}

fn files(dir: &std::path::Path) -> usize {
    list_parquet_files(&dir.join("parquet")).unwrap().len()
}

/// One new user's trickle: `n` small batches, each compacted on its own.
async fn trickle(store: &LocalStore, from: usize, n: usize) {
    for b in from..from + n {
        let records = (0..25)
            .map(|i| {
                event(
                    &format!("e{b}-{i}"),
                    &format!("u{}", i % 5),
                    "click",
                    DAY0 + (b as i64) * HOUR + i,
                    Some(1.0),
                )
            })
            .chain([exposure(
                &format!("x{b}"),
                "exp",
                "a",
                DAY0 + b as i64 * HOUR,
            )])
            .collect::<Vec<_>>();
        store.append(Batch::from(records)).await.unwrap();
        store.compact_now().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_keeps_file_counts_proportional_to_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), merging(8)).await.unwrap();
    trickle(&store, 0, 48).await;
    let before = files(dir.path());
    let r = store.merge_now().await.unwrap();
    let after = files(dir.path());
    assert!(r.parquet_merged > 0, "{r:?}");
    assert!(after * 4 <= before, "{before} files -> {after}");
    // Every row exactly once; the duplicates of earlier batches are still
    // recognised after a reopen, which reads the merged key files.
    assert_eq!(rows(&dir.path().join("parquet")), 48 * 26);
    store.shutdown().await;
    drop(store);
    let store = LocalStore::open(dir.path(), merging(8)).await.unwrap();
    let again: Vec<_> = (0..25)
        .map(|i| event(&format!("e3-{i}"), "u0", "click", DAY0 + 3 * HOUR + i, None))
        .collect();
    let outcome = store.append(Batch::from(again)).await.unwrap();
    assert!(
        outcome.iter().all(|o| *o == Outcome::Duplicate),
        "merged keys still deduplicate: {outcome:?}"
    );
    store.compact_now().await.unwrap();
    assert_eq!(rows(&dir.path().join("parquet")), 48 * 26);
    // More of the trickle and another merge: the count stays bounded.
    trickle(&store, 48, 48).await;
    store.merge_now().await.unwrap();
    assert_eq!(rows(&dir.path().join("parquet")), 96 * 26);
    assert!(files(dir.path()) * 4 <= 2 * before);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_waits_for_readers_holding_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), merging(2)).await.unwrap();
    trickle(&store, 0, 6).await;
    let before = files(dir.path());
    let lease = store.read_lease().await;
    let merge = {
        let store = store.clone();
        tokio::spawn(async move { store.merge_now().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!merge.is_finished(), "a merge ran under a reader's lease");
    assert_eq!(files(dir.path()), before);
    drop(lease);
    let r = tokio::time::timeout(Duration::from_secs(10), merge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(r.parquet_merged > 0);
    assert!(files(dir.path()) < before);
    assert_eq!(rows(&dir.path().join("parquet")), 6 * 26);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_retention_wait_for_readers_holding_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), manual()).await.unwrap();
    trickle(&store, 0, 4).await;
    let lease = store.read_lease().await;
    let delete = {
        let store = store.clone();
        tokio::spawn(async move { store.delete_unit("u1").await })
    };
    let retention = {
        let store = store.clone();
        let policy = strata_pipeline::RetentionPolicy::default();
        // Days later nothing has expired, so the two may take the lease in
        // either order.
        tokio::spawn(async move { store.apply_retention(DAY0 + 5 * DAY, &policy).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !delete.is_finished(),
        "a deletion rewrote files under a reader's lease"
    );
    assert!(
        !retention.is_finished(),
        "retention ran under a reader's lease"
    );
    assert_eq!(rows(&dir.path().join("parquet")), 4 * 26);
    drop(lease);
    let deleted = tokio::time::timeout(Duration::from_secs(10), delete)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(deleted.events_removed, 4 * 5, "{deleted:?}");
    tokio::time::timeout(Duration::from_secs(10), retention)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_compactor_merges_by_itself() {
    // The same trickle without merging, for the count to compare with.
    let plain = tempfile::tempdir().unwrap();
    let store = LocalStore::open(
        plain.path(),
        StoreOptions {
            merge: None,
            ..manual()
        },
    )
    .await
    .unwrap();
    trickle(&store, 0, 24).await;
    let unmerged = files(plain.path());
    store.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        background_compaction: true,
        compact_poll: Duration::from_millis(20),
        merge_interval: Duration::from_millis(50),
        ..merging(4)
    };
    let store = LocalStore::open(dir.path(), opts).await.unwrap();
    trickle(&store, 0, 24).await;
    // Bounded wait for the background merge.
    let mut merged = false;
    for _ in 0..200 {
        if files(dir.path()) * 2 <= unmerged {
            merged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(merged, "{} files, {unmerged} unmerged", files(dir.path()));
    // Read as a reader must: under the lease, so that no merge still under
    // way replaces files between listing and reading them.
    let lease = store.read_lease().await;
    assert_eq!(rows(&dir.path().join("parquet")), 24 * 26);
    drop(lease);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        merge: None,
        ..manual()
    };
    let store = LocalStore::open(dir.path(), opts).await.unwrap();
    trickle(&store, 0, 10).await;
    let before = files(dir.path());
    let r = store.merge_now().await.unwrap();
    assert_eq!(r.parquet_merged + r.keys_merged, 0);
    assert_eq!(files(dir.path()), before);
    store.shutdown().await;
}

/// The hidden files under the Parquet root: writes not yet published.
fn hidden(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if e.file_name().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("parquet"), &mut out);
    out
}

/// A background store whose merges start as soon as files are written.
fn background() -> StoreOptions {
    StoreOptions {
        background_compaction: true,
        compact_poll: Duration::from_millis(20),
        merge_interval: Duration::from_millis(50),
        ..merging(4)
    }
}

/// Waits (bounded) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A background store at `dir` with a trickle of small files, whose merge
/// has begun writing its files while a long reader holds the returned
/// lease (compaction goes on meanwhile).
async fn merge_under_a_lease(
    dir: &std::path::Path,
) -> (std::sync::Arc<LocalStore>, strata_pipeline::ReadLease) {
    let store = LocalStore::open(dir, background()).await.unwrap();
    let lease = store.read_lease().await;
    trickle(&store, 0, 24).await;
    until("the merge has written its files", || {
        !hidden(dir).is_empty()
    })
    .await;
    (store, lease)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_wait_for_a_background_merge_to_write_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lease) = merge_under_a_lease(dir.path()).await;
    let before = files(dir.path());
    // A reader arriving while the merge waits to publish is not queued
    // behind it, and sees every row once.
    let second = tokio::time::timeout(Duration::from_millis(200), store.read_lease())
        .await
        .expect("a reader waited for a merge");
    assert_eq!(rows(&dir.path().join("parquet")), 24 * 26);
    assert_eq!(files(dir.path()), before, "a merge published under a lease");
    drop(second);
    drop(lease);
    // Published the first moment no reader holds a lease.
    until("the merge is published", || files(dir.path()) * 2 <= before).await;
    let lease = store.read_lease().await;
    assert_eq!(rows(&dir.path().join("parquet")), 24 * 26);
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    drop(lease);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_waiting_to_publish_is_given_up_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lease) = merge_under_a_lease(dir.path()).await;
    let before = files(dir.path());
    // The reader outlives the store: the shutdown does not wait for it.
    tokio::time::timeout(Duration::from_secs(10), store.shutdown())
        .await
        .expect("the shutdown waited for a reader");
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    assert_eq!(files(dir.path()), before);
    assert_eq!(rows(&dir.path().join("parquet")), 24 * 26);
    drop(lease);
}
