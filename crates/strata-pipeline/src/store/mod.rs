//! [`LocalStore`]: the embedded durable sink — segment log, deduplication,
//! background compaction into Parquet, retention and deletion.
//!
//! ```text
//! DATA/log/<id>.seg               segments not yet compacted (crate::log)
//! DATA/dedup/<first>-<last>.keys  keys of compacted ranges (crate::dedup)
//! DATA/parquet/kind=…/date=…/part=NN/seg-<first>-<last>.parquet
//! ```
//!
//! The store is four parts around one shared state (`Inner`: the options,
//! the writer's queue, the table of un-compacted segments, the counters and
//! the compaction lock):
//!
//! - `recovery` runs once in [`LocalStore::open`] and hands back the
//!   deduplication index, the segment table and a fresh active segment;
//! - `writer` owns the active segment and the index on one thread and
//!   makes appends durable by group commit: a record is acknowledged only
//!   after the `fdatasync` of its group;
//! - `compactor` turns sealed segments into Parquet, in the background and
//!   on [`LocalStore::compact_now`];
//! - `stats` holds the counters and renders them with the backlog gauges.
//!
//! Retention, deletion and the merging of small files ([`crate::merge`])
//! never touch a file at once (a merge holds a lock of its own that the
//! other two take, and they take the compaction lock). A reader in the
//! process that must see each row exactly once holds a [`ReadLease`] while
//! it reads: a merge writes its files meanwhile, under hidden names, and
//! publishes them only while no lease is held.

mod compactor;
mod recovery;
mod stats;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::compact::{self, CompactionReport, Layout};
use crate::delete::{self, DeletionReport};
use crate::error::{Result, StoreError};
use crate::log::HEADER_LEN;
use crate::merge::{MergeOptions, MergeReport};
use crate::retention::{self, RetentionPolicy, RetentionReport};
use crate::{Batch, BoxFuture, Outcome, Pressure, Sink, SinkError};

use stats::Metrics;
use writer::{Cmd, Writer};

/// Tuning of a [`LocalStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A segment is sealed once it reaches this size (default 8 MiB).
    pub segment_bytes: u64,
    /// User partitions of the Parquet layout (default 16).
    pub partitions: u32,
    /// How long a record's key stays in the deduplication index after it
    /// was received (default 7 days).
    pub dedup_window: Duration,
    /// Background compaction starts when this many log bytes wait
    /// (default 8 MiB)…
    pub compact_bytes: u64,
    /// …or when the oldest waiting record is this old (default 2 s).
    pub compact_age: Duration,
    /// How often the background compactor checks (default 250 ms).
    pub compact_poll: Duration,
    /// Run the background compactor (default true; tests turn it off to
    /// drive compaction with [`LocalStore::compact_now`]).
    pub background_compaction: bool,
    /// Most log bytes compacted into one set of Parquet files (default
    /// 64 MiB); bounds the compactor's memory.
    pub compact_max_bytes: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Most bytes written by one group commit (default 32 MiB).
    pub max_group_bytes: usize,
    /// Append requests queued for the writer before `append` waits
    /// (default 4096).
    pub queue_depth: usize,
    /// Merging of the small files compaction leaves behind (none: never
    /// merge); see [`crate::merge`].
    pub merge: Option<MergeOptions>,
    /// The background compactor merges at most this often, when new files
    /// were written since (default 30 s).
    pub merge_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: 8 << 20,
            partitions: crate::partition::DEFAULT_PARTITIONS,
            dedup_window: Duration::from_secs(7 * 86_400),
            compact_bytes: 8 << 20,
            compact_age: Duration::from_secs(2),
            compact_poll: Duration::from_millis(250),
            background_compaction: true,
            compact_max_bytes: 64 << 20,
            row_group_rows: crate::parquet::DEFAULT_ROW_GROUP_ROWS,
            max_group_bytes: 32 << 20,
            queue_depth: 4096,
            merge: Some(MergeOptions::default()),
            merge_interval: Duration::from_secs(30),
        }
    }
}

impl StoreOptions {
    fn validate(&self) -> Result<()> {
        let bad = |option, reason: &str| {
            Err(StoreError::Option {
                option,
                reason: reason.to_string(),
            })
        };
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", "must be at least 4096");
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return bad("partitions", "must be between 1 and 10000");
        }
        if self.queue_depth == 0 {
            return bad("queue_depth", "must be positive");
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows", "must be positive");
        }
        if self.compact_poll.is_zero() {
            return bad("compact_poll", "must be positive");
        }
        Ok(())
    }

    fn window_days(&self) -> i32 {
        i32::try_from(self.dedup_window.as_secs().div_ceil(86_400)).unwrap_or(i32::MAX)
    }
}

/// A sealed or active segment waiting for compaction.
#[derive(Debug, Clone, Copy)]
struct SegInfo {
    bytes: u64,
    /// When its oldest record was appended (file time for recovered ones).
    since: SystemTime,
}

#[derive(Debug, Default)]
struct Segments {
    /// Un-compacted segments by id, the active one included.
    map: BTreeMap<u64, SegInfo>,
    active: u64,
}

/// The state the writer, the compactor and the public operations share.
struct Inner {
    layout: Layout,
    opts: StoreOptions,
    tx: mpsc::Sender<Cmd>,
    segments: Mutex<Segments>,
    metrics: Metrics,
    closed: AtomicBool,
    compact_lock: tokio::sync::Mutex<Option<Vec<u64>>>,
    /// Held (shared) by readers that must not see a merge half done.
    read_lease: Arc<tokio::sync::RwLock<()>>,
    /// Held by a merge from its first read to its publication, and by
    /// deletion and retention passes: none of them rewrites a file another
    /// is reading (taken before `read_lease`'s write side).
    merge_lock: Arc<tokio::sync::Mutex<()>>,
    /// Parquet files written since the last merge, and when that was.
    merge_state: Mutex<(u64, Option<std::time::Instant>)>,
    /// Kept between compactions (see [`compact::SegmentBuffers`]).
    segment_buffers: Mutex<compact::SegmentBuffers>,
    stop_compactor: Notify,
    compactor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A reader's hold on the Parquet tree (see [`LocalStore::read_lease`]).
#[derive(Debug)]
pub struct ReadLease {
    pub(crate) _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// The embedded durable store; see the module documentation.
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("dir", &self.inner.layout.root)
            .finish_non_exhaustive()
    }
}

/// What [`LocalStore::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Un-compacted segments replayed.
    pub segments_replayed: u64,
    /// Records in them.
    pub records_replayed: u64,
    /// Bytes cut from a torn tail of the newest segment.
    pub torn_bytes_truncated: u64,
    /// Keys loaded into the deduplication index.
    pub dedup_keys: u64,
    /// Interrupted compactions finished or undone.
    pub compaction_recovery: compact::CompactionRecovery,
}

impl LocalStore {
    /// Opens (or creates) the store in `dir`: finishes interrupted
    /// compactions, truncates a torn tail, rebuilds the deduplication index
    /// from un-compacted segments and key files, queues the un-compacted
    /// segments for compaction, and starts the writer thread and (unless
    /// disabled) the background compactor on the current tokio runtime.
    pub async fn open(dir: &Path, opts: StoreOptions) -> Result<Arc<LocalStore>> {
        Self::open_with_report(dir, opts).await.map(|(s, _)| s)
    }

    /// [`open`](Self::open), also returning what recovery found.
    pub async fn open_with_report(
        dir: &Path,
        opts: StoreOptions,
    ) -> Result<(Arc<LocalStore>, OpenReport)> {
        opts.validate()?;
        let layout = Layout::new(dir);
        let opts2 = opts.clone();
        let layout2 = layout.clone();
        let (index, segments, report, seg) =
            tokio::task::spawn_blocking(move || recovery::recover(&layout2, &opts2))
                .await
                .map_err(|e| StoreError::Closed(format!("recovery task failed: {e}")))??;
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let metrics = Metrics::default();
        metrics
            .recovered_torn_bytes
            .store(report.torn_bytes_truncated, Ordering::Relaxed);
        metrics.set_index(&index);
        let inner = Arc::new(Inner {
            layout: layout.clone(),
            opts: opts.clone(),
            tx,
            segments: Mutex::new(segments),
            metrics,
            closed: AtomicBool::new(false),
            compact_lock: tokio::sync::Mutex::new(None),
            read_lease: Arc::default(),
            merge_lock: Arc::default(),
            merge_state: Mutex::new((0, None)),
            segment_buffers: Mutex::default(),
            stop_compactor: Notify::new(),
            compactor: Mutex::new(None),
        });
        Writer::new(rx, &inner, layout, seg, index, &opts).spawn(dir)?;
        if opts.background_compaction {
            let task = tokio::spawn(compactor::background(Arc::clone(&inner)));
            if let Ok(mut c) = inner.compactor.lock() {
                *c = Some(task);
            }
        }
        Ok((Arc::new(LocalStore { inner }), report))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.layout.root
    }

    /// The root of the Parquet tree (`DATA/parquet`).
    pub fn parquet_dir(&self) -> &Path {
        &self.inner.layout.parquet
    }

    /// Compacts every record durable now into Parquet.
    pub async fn compact_now(&self) -> Result<CompactionReport> {
        self.inner.compact_now().await
    }

    /// Merges the small files compaction left behind now ([`crate::merge`]),
    /// waiting for readers holding a [`ReadLease`] to finish; compaction
    /// goes on meanwhile. Does nothing when merging is disabled.
    pub async fn merge_now(&self) -> Result<MergeReport> {
        let merging = Arc::clone(&self.inner.merge_lock).lock_owned().await;
        self.inner.merge_with(merging, true).await
    }

    /// A lease under which the Parquet tree shows every compacted row
    /// exactly once and no file changes under a reader: merges of small
    /// files, unit deletions and retention wait until it is dropped.
    /// Compaction goes on (it only adds files).
    pub async fn read_lease(&self) -> ReadLease {
        ReadLease {
            _guard: Arc::clone(&self.inner.read_lease).read_owned().await,
        }
    }

    /// Removes every stored record of `unit_id`: compacts the log, then
    /// rewrites the Parquet files of the unit's partition without its rows
    /// (and those of the anonymous ids aliased to it, see
    /// [`crate::delete`]).
    /// Waits for readers holding a [`ReadLease`]: a reader must not find a
    /// file replaced (or gone) between listing and reading it.
    pub async fn delete_unit(&self, unit_id: &str) -> Result<DeletionReport> {
        let inner = &self.inner;
        // A merge under way first, then the lease, then the compaction lock.
        let _merging = inner.merge_lock.lock().await;
        let _lease = Arc::clone(&inner.read_lease).write_owned().await;
        let mut guard = inner.compact_lock.lock().await;
        let compacted = inner.compact_locked(&mut guard, Some(unit_id)).await?;
        let parquet = inner.layout.parquet.clone();
        let unit = unit_id.to_string();
        let (partitions, rg) = (inner.opts.partitions, inner.opts.row_group_rows);
        let mut report = tokio::task::spawn_blocking(move || {
            delete::delete_unit_parquet(&parquet, &unit, partitions, rg)
        })
        .await
        .map_err(|e| StoreError::Closed(format!("deletion task failed: {e}")))??;
        drop(guard);
        // The compaction's records of this unit are among the rows removed;
        // count how many came from the log for the audit trail.
        report.log_records_compacted = compacted.unit_records;
        inner.metrics.deleted_rows.fetch_add(
            report.exposures_removed + report.events_removed + report.aliases_removed,
            Ordering::Relaxed,
        );
        Ok(report)
    }

    /// Applies a retention policy at time `now_micros` to the Parquet
    /// store. Deduplication key files past the window are not touched
    /// here: they are dropped when the store is next opened. Waits for
    /// readers holding a [`ReadLease`], as [`LocalStore::delete_unit`] does.
    pub async fn apply_retention(
        &self,
        now_micros: i64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport> {
        let inner = &self.inner;
        let _merging = inner.merge_lock.lock().await;
        let _lease = Arc::clone(&inner.read_lease).write_owned().await;
        let guard = inner.compact_lock.lock().await;
        let parquet = inner.layout.parquet.clone();
        let policy = policy.clone();
        let rg = inner.opts.row_group_rows;
        let report = tokio::task::spawn_blocking(move || {
            retention::apply(&parquet, now_micros, &policy, rg)
        })
        .await
        .map_err(|e| StoreError::Closed(format!("retention task failed: {e}")))??;
        drop(guard);
        inner
            .metrics
            .retention_rows
            .fetch_add(report.exposure_rows_removed, Ordering::Relaxed);
        Ok(report)
    }

    /// Stops the background compactor and the writer; queued appends are
    /// answered first, later ones fail with [`SinkError::Unavailable`].
    /// Un-compacted segments stay in the log for the next open.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        inner.stop_compactor.notify_one();
        let task = inner.compactor.lock().ok().and_then(|mut c| c.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        let (tx, rx) = oneshot::channel();
        if inner.tx.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Appends Prometheus text lines of the store's metrics to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.render_metrics(out);
    }
}

impl Sink for LocalStore {
    fn append(
        &self,
        records: Batch,
    ) -> BoxFuture<'_, std::result::Result<Vec<Outcome>, SinkError>> {
        Box::pin(self.inner.append(records))
    }

    fn pressure(&self) -> Pressure {
        self.inner.pressure()
    }
}

impl Inner {
    fn pressure(&self) -> Pressure {
        let (backlog, oldest) = self.backlog();
        Pressure {
            backlog_bytes: backlog,
            compaction_lag: oldest.and_then(|t| SystemTime::now().duration_since(t).ok()),
            disk_free_bytes: disk_free(&self.layout.root),
        }
    }

    /// Un-compacted record bytes and the time of the oldest un-compacted
    /// record.
    fn backlog(&self) -> (u64, Option<SystemTime>) {
        let Ok(s) = self.segments.lock() else {
            return (0, None);
        };
        let mut bytes = 0;
        let mut oldest = None;
        for info in s.map.values() {
            let b = info.bytes.saturating_sub(HEADER_LEN);
            if b > 0 {
                bytes += b;
                oldest = Some(oldest.map_or(info.since, |o: SystemTime| o.min(info.since)));
            }
        }
        (bytes, oldest)
    }
}

fn disk_free(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}
