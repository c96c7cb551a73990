//! [`LocalStore`]: the embedded durable sink — segment log, deduplication,
//! background compaction into Parquet, retention and deletion.
//!
//! ```text
//! DATA/log/<id>.seg               segments not yet compacted (crate::log)
//! DATA/dedup/<first>-<last>.keys  keys of compacted ranges (crate::dedup)
//! DATA/parquet/kind=…/date=…/part=NN/seg-<first>-<last>.parquet
//! ```
//!
//! **Group commit.** `append` takes a [`Batch`], whose records the parser
//! already encoded as frames with their dedup keys, and queues it to one
//! writer thread. The writer takes
//! everything queued, decides per record whether it is a duplicate (against
//! the durable index and the rest of the group, so concurrent requests
//! cannot race), writes the accepted frames with one `write` and one
//! `fdatasync`, and only then adds the keys to the index and answers every
//! caller of the group. If the write or sync fails, every caller of the
//! group gets an error and nothing of it counts as seen; the segment is cut
//! back to its previous length (and the store refuses appends if even that
//! fails).
//!
//! **Compaction** runs on a background task when the backlog passes
//! `compact_bytes` or its oldest record `compact_age`, and on
//! [`LocalStore::compact_now`]; see [`crate::compact`] for the crash-safety
//! argument. Retention and deletion rewrite Parquet under the same lock as
//! compaction, so the three never touch a file at once.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::hash::BuildHasherDefault;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::compact::{self, CompactionReport, Layout};
use crate::dedup::{self, Index, Key, KeyHasher};
use crate::delete::{self, DeletionReport};
use crate::error::{Result, StoreError};
use crate::log::{self, ActiveSegment, HEADER_LEN};
use crate::record::{utc_day, Kind};
use crate::retention::{self, RetentionPolicy, RetentionReport};
use crate::{Batch, BoxFuture, Outcome, Pressure, Sink, SinkError};

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

#[derive(Debug, Default)]
struct Metrics {
    accepted: [AtomicU64; 2],
    duplicates: [AtomicU64; 2],
    log_bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_micros: AtomicU64,
    append_errors: AtomicU64,
    compactions: AtomicU64,
    compaction_errors: AtomicU64,
    compacted: [AtomicU64; 2],
    parquet_files: AtomicU64,
    compaction_micros: AtomicU64,
    dedup_keys: AtomicU64,
    dedup_bytes: AtomicU64,
    retention_rows: AtomicU64,
    deleted_rows: AtomicU64,
    recovered_torn_bytes: AtomicU64,
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Exposure => 0,
        Kind::Event => 1,
    }
}

type Reply = oneshot::Sender<std::result::Result<Vec<Outcome>, SinkError>>;

struct AppendReq {
    /// The frames, with each record's kind and dedup key.
    batch: Batch,
    reply: Reply,
}

enum Cmd {
    Append(AppendReq),
    /// Seal the active segment if it holds records; answers the id of the
    /// newest sealed segment (0 if none).
    Rotate(oneshot::Sender<Result<u64>>),
    Stop(oneshot::Sender<()>),
}

struct Inner {
    layout: Layout,
    opts: StoreOptions,
    tx: mpsc::Sender<Cmd>,
    segments: Mutex<Segments>,
    metrics: Metrics,
    closed: AtomicBool,
    compact_lock: tokio::sync::Mutex<Option<Vec<u64>>>,
    /// Kept between compactions (see [`compact::SegmentBuffers`]).
    segment_buffers: Mutex<compact::SegmentBuffers>,
    stop_compactor: Notify,
    compactor: Mutex<Option<tokio::task::JoinHandle<()>>>,
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

struct Writer {
    rx: mpsc::Receiver<Cmd>,
    inner: std::sync::Weak<Inner>,
    layout: Layout,
    seg: ActiveSegment,
    index: Index,
    segment_bytes: u64,
    max_group_bytes: usize,
    window_days: i32,
    expired_on: i64,
    poisoned: Option<String>,
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
            tokio::task::spawn_blocking(move || recover(&layout2, &opts2))
                .await
                .map_err(|e| StoreError::Closed(format!("recovery task failed: {e}")))??;
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let metrics = Metrics::default();
        metrics
            .recovered_torn_bytes
            .store(report.torn_bytes_truncated, Ordering::Relaxed);
        metrics
            .dedup_keys
            .store(index.len() as u64, Ordering::Relaxed);
        metrics
            .dedup_bytes
            .store(index.memory_bytes() as u64, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            layout: layout.clone(),
            opts: opts.clone(),
            tx,
            segments: Mutex::new(segments),
            metrics,
            closed: AtomicBool::new(false),
            compact_lock: tokio::sync::Mutex::new(None),
            segment_buffers: Mutex::default(),
            stop_compactor: Notify::new(),
            compactor: Mutex::new(None),
        });
        let writer = Writer {
            rx,
            inner: Arc::downgrade(&inner),
            layout,
            seg,
            index,
            segment_bytes: opts.segment_bytes,
            max_group_bytes: opts.max_group_bytes,
            window_days: opts.window_days(),
            expired_on: utc_day(crate::record::now_micros()),
            poisoned: None,
        };
        std::thread::Builder::new()
            .name("strata-log-writer".into())
            .spawn(move || {
                // Best effort (raising a priority needs CAP_SYS_NICE): every
                // acknowledgement waits for this thread, so it goes before
                // request parsing when the cores are busy.
                let _ = rustix::process::setpriority_process(None, WRITER_NICE);
                writer.run()
            })
            .map_err(|e| StoreError::io("spawn log writer", dir, e))?;
        if opts.background_compaction {
            let task = tokio::spawn(background_compactor(Arc::clone(&inner)));
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

    /// Removes every stored record of `unit_id`: compacts the log, then
    /// rewrites the Parquet files of the unit's partition without its rows.
    pub async fn delete_unit(&self, unit_id: &str) -> Result<DeletionReport> {
        let inner = &self.inner;
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
            report.exposures_removed + report.events_removed,
            Ordering::Relaxed,
        );
        Ok(report)
    }

    /// Applies a retention policy at time `now_micros` to the Parquet
    /// store, and forgets deduplication key files past the window.
    pub async fn apply_retention(
        &self,
        now_micros: i64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport> {
        let inner = &self.inner;
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

/// Result of a compaction pass, with the count of one unit's records for
/// a deletion's audit.
#[derive(Default)]
struct Compacted {
    report: CompactionReport,
    unit_records: u64,
}

impl Inner {
    async fn append(&self, records: Batch) -> std::result::Result<Vec<Outcome>, SinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SinkError::Unavailable {
                reason: "store is shutting down".into(),
                retry_after: Duration::from_secs(1),
            });
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The batch is already a run of log frames with each record's dedup
        // key, so the single writer does nothing but check keys, copy and
        // sync.
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            batch: records,
            reply,
        };
        self.tx
            .send(Cmd::Append(req))
            .await
            .map_err(|_| SinkError::Unavailable {
                reason: "log writer stopped".into(),
                retry_after: Duration::from_secs(1),
            })?;
        rx.await
            .map_err(|_| SinkError::Io("log writer stopped before answering".into()))?
    }

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

    async fn rotate(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Rotate(tx))
            .await
            .map_err(|_| StoreError::Closed("log writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Closed("log writer stopped before answering".into()))?
    }

    async fn compact_now(&self) -> Result<CompactionReport> {
        let mut guard = self.compact_lock.lock().await;
        Ok(self.compact_locked(&mut guard, None).await?.report)
    }

    /// Seals the active segment and compacts every sealed segment. `retry`
    /// (the lock's content) is the range of a failed attempt, which must be
    /// redone exactly. With `count_unit`, also counts that unit's records
    /// among them (a second read of the segments, so only for deletions).
    async fn compact_locked(
        &self,
        retry: &mut Option<Vec<u64>>,
        count_unit: Option<&str>,
    ) -> Result<Compacted> {
        let sealed = self.rotate().await?;
        let mut total = Compacted::default();
        loop {
            let ids = match retry.clone() {
                Some(ids) => ids,
                None => {
                    let Ok(s) = self.segments.lock() else {
                        return Err(StoreError::Closed("segment table poisoned".into()));
                    };
                    let mut ids = Vec::new();
                    let mut bytes = 0;
                    for (&id, info) in s.map.range(..=sealed) {
                        if id == s.active
                            || (!ids.is_empty() && bytes + info.bytes > self.opts.compact_max_bytes)
                        {
                            break;
                        }
                        bytes += info.bytes;
                        ids.push(id);
                    }
                    ids
                }
            };
            if ids.is_empty() {
                return Ok(total);
            }
            *retry = Some(ids.clone());
            let layout = self.layout.clone();
            let (partitions, rg) = (self.opts.partitions, self.opts.row_group_rows);
            let ids2 = ids.clone();
            let unit = count_unit.map(str::to_owned);
            let started = Instant::now();
            let mut buffers = self
                .segment_buffers
                .lock()
                .map(|mut b| std::mem::take(&mut *b))
                .unwrap_or_default();
            let (res, buffers) = tokio::task::spawn_blocking(move || {
                let units = unit.map_or(0, |u| unit_records(&layout, &ids2, &u));
                let res = compact::compact_range_with(&layout, &ids2, partitions, rg, &mut buffers)
                    .map(|r| (r, units));
                (res, buffers)
            })
            .await
            .map_err(|e| StoreError::Closed(format!("compaction task failed: {e}")))?;
            if let Ok(mut b) = self.segment_buffers.lock() {
                *b = buffers;
            }
            let m = &self.metrics;
            match res {
                Ok((r, units)) => {
                    *retry = None;
                    if let Ok(mut s) = self.segments.lock() {
                        for id in &ids {
                            s.map.remove(id);
                        }
                    }
                    m.compactions.fetch_add(1, Ordering::Relaxed);
                    m.compacted[0].fetch_add(r.exposures, Ordering::Relaxed);
                    m.compacted[1].fetch_add(r.events, Ordering::Relaxed);
                    m.parquet_files.fetch_add(r.files, Ordering::Relaxed);
                    m.compaction_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    total.report.add(&r);
                    total.unit_records += units;
                }
                Err(e) => {
                    m.compaction_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    fn render_metrics(&self, out: &mut String) {
        let m = &self.metrics;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP strata_pipeline_{name} {help}");
            let _ = writeln!(out, "# TYPE strata_pipeline_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "strata_pipeline_{name}{labels} {v}");
            }
        };
        let mut records = Vec::new();
        for (i, kind) in ["exposure", "event"].iter().enumerate() {
            records.push((
                format!("{{kind=\"{kind}\",outcome=\"accepted\"}}"),
                get(&m.accepted[i]).to_string(),
            ));
            records.push((
                format!("{{kind=\"{kind}\",outcome=\"duplicate\"}}"),
                get(&m.duplicates[i]).to_string(),
            ));
        }
        let records: Vec<(&str, String)> = records
            .iter()
            .map(|(l, v)| (l.as_str(), v.clone()))
            .collect();
        metric(
            "log_records_total",
            "counter",
            "Records appended to the durable log, by kind and outcome.",
            &records,
        );
        metric(
            "log_bytes_total",
            "counter",
            "Bytes of records fsync'd to the log.",
            &[("", get(&m.log_bytes).to_string())],
        );
        metric(
            "log_fsyncs_total",
            "counter",
            "Group commits (one fdatasync each).",
            &[("", get(&m.fsyncs).to_string())],
        );
        metric(
            "log_fsync_seconds_total",
            "counter",
            "Time spent writing and syncing group commits.",
            &[("", format!("{:.6}", get(&m.fsync_micros) as f64 / 1e6))],
        );
        metric(
            "log_append_errors_total",
            "counter",
            "Group commits that failed (their callers got an error).",
            &[("", get(&m.append_errors).to_string())],
        );
        metric(
            "log_torn_bytes_truncated",
            "gauge",
            "Bytes cut from a torn log tail at the last start-up.",
            &[("", get(&m.recovered_torn_bytes).to_string())],
        );
        let (backlog, oldest) = self.backlog();
        let segments = self.segments.lock().map(|s| s.map.len()).unwrap_or(0);
        metric(
            "log_segments",
            "gauge",
            "Log segments not yet compacted (the active one included).",
            &[("", segments.to_string())],
        );
        metric(
            "log_backlog_bytes",
            "gauge",
            "Record bytes in the log not yet compacted into Parquet.",
            &[("", backlog.to_string())],
        );
        let lag = oldest
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        metric(
            "compaction_lag_seconds",
            "gauge",
            "Age of the oldest record not yet compacted (0 when none).",
            &[("", format!("{lag:.3}"))],
        );
        metric(
            "compactions_total",
            "counter",
            "Compactions committed.",
            &[("", get(&m.compactions).to_string())],
        );
        metric(
            "compaction_errors_total",
            "counter",
            "Compactions that failed (retried).",
            &[("", get(&m.compaction_errors).to_string())],
        );
        metric(
            "compacted_records_total",
            "counter",
            "Records written to Parquet by the compactor, by kind.",
            &[
                ("{kind=\"exposure\"}", get(&m.compacted[0]).to_string()),
                ("{kind=\"event\"}", get(&m.compacted[1]).to_string()),
            ],
        );
        metric(
            "parquet_files_written_total",
            "counter",
            "Parquet files written by the compactor.",
            &[("", get(&m.parquet_files).to_string())],
        );
        metric(
            "compaction_seconds_total",
            "counter",
            "Time spent compacting.",
            &[("", format!("{:.6}", get(&m.compaction_micros) as f64 / 1e6))],
        );
        metric(
            "dedup_keys",
            "gauge",
            "Keys in the deduplication index.",
            &[("", get(&m.dedup_keys).to_string())],
        );
        metric(
            "dedup_memory_bytes",
            "gauge",
            "Approximate memory of the deduplication index.",
            &[("", get(&m.dedup_bytes).to_string())],
        );
        metric(
            "retention_rows_removed_total",
            "counter",
            "Exposure rows removed by retention.",
            &[("", get(&m.retention_rows).to_string())],
        );
        metric(
            "deleted_rows_total",
            "counter",
            "Rows removed by unit deletions.",
            &[("", get(&m.deleted_rows).to_string())],
        );
        if let Some(free) = disk_free(&self.layout.root) {
            metric(
                "disk_free_bytes",
                "gauge",
                "Free bytes on the data directory's volume.",
                &[("", free.to_string())],
            );
        }
    }
}

/// Nice value the log writer asks for (granted only with `CAP_SYS_NICE`).
const WRITER_NICE: i32 = -5;

/// Records of `unit_id` in the segments `ids`; read errors surface in
/// `compact_range` itself.
fn unit_records(layout: &Layout, ids: &[u64], unit_id: &str) -> u64 {
    ids.iter()
        .filter_map(|&id| log::read_segment_bytes(&log::segment_path(&layout.log, id)).ok())
        .map(|bytes| {
            log::scan_refs(&bytes)
                .records
                .iter()
                .filter(|r| r.unit_id() == unit_id)
                .count() as u64
        })
        .sum()
}

fn disk_free(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

async fn background_compactor(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(inner.opts.compact_poll) => {}
            () = inner.stop_compactor.notified() => return,
        }
        let (bytes, oldest) = inner.backlog();
        let age = oldest
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let retry_pending = inner
            .compact_lock
            .try_lock()
            .map(|g| g.is_some())
            .unwrap_or(false);
        if bytes >= inner.opts.compact_bytes
            || (bytes > 0 && age >= inner.opts.compact_age)
            || retry_pending
        {
            if let Err(e) = inner.compact_now().await {
                tracing::warn!(error = %e, "background compaction failed; will retry");
                // Back off a little so a persistent failure does not spin.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = inner.stop_compactor.notified() => return,
                }
            }
        }
    }
}

type Recovered = (Index, Segments, OpenReport, ActiveSegment);

fn recover(layout: &Layout, opts: &StoreOptions) -> Result<Recovered> {
    layout.create()?;
    let mut report = OpenReport {
        compaction_recovery: compact::recover(layout)?,
        ..Default::default()
    };
    let today = utc_day(crate::record::now_micros());
    let first_day = i32::try_from(today)
        .unwrap_or(i32::MAX)
        .saturating_sub(opts.window_days());
    let mut index = Index::default();

    // Key files of compacted ranges: load those within the window, remove
    // those wholly past it except the newest (it records the highest
    // segment id ever used, so ids are never reused).
    let key_files = dedup::list_key_files(&layout.dedup)?;
    let newest = key_files.last().copied();
    for &(a, b) in &key_files {
        let path = dedup::keys_path(&layout.dedup, a, b);
        match dedup::read_key_file(&path) {
            Ok(keys) => {
                let mut live = false;
                for (k, d) in keys {
                    if d >= first_day {
                        index.insert(k, d);
                        live = true;
                    }
                }
                if !live && Some((a, b)) != newest {
                    std::fs::remove_file(&path)
                        .map_err(|e| StoreError::io("remove expired key file", &path, e))?;
                }
            }
            // A damaged key file weakens deduplication of old retries but
            // loses no data; keep it (it still commits its range) and go on.
            Err(e) => {
                tracing::warn!(error = %e, "unreadable dedup key file; its keys are not loaded")
            }
        }
    }

    let ids = log::list_segments(&layout.log)?;
    let mut segments = Segments::default();
    let last = ids.last().copied();
    for &id in &ids {
        let path = log::segment_path(&layout.log, id);
        let meta =
            std::fs::metadata(&path).map_err(|e| StoreError::io("stat segment", &path, e))?;
        let bytes = log::read_segment_bytes(&path)?;
        let scan = log::scan_refs(&bytes);
        let mut len = meta.len();
        if scan.valid_len < len {
            let damage = scan.damage.clone().unwrap_or_default();
            if Some(id) == last {
                // A torn tail: the expected result of a crash mid-append.
                report.torn_bytes_truncated += len - scan.valid_len;
                if scan.valid_len < HEADER_LEN {
                    std::fs::remove_file(&path)
                        .map_err(|e| StoreError::io("remove torn segment", &path, e))?;
                    continue;
                }
                log::truncate(&path, scan.valid_len)?;
                len = scan.valid_len;
                tracing::info!(segment = %path.display(), %damage, "truncated torn log tail");
            } else {
                // Damage inside a sealed segment is not a crash artefact;
                // keep the file for inspection and read its valid prefix.
                tracing::warn!(segment = %path.display(), %damage, "sealed segment damaged; records after the damage are unreadable");
            }
        }
        report.segments_replayed += 1;
        report.records_replayed += scan.records.len() as u64;
        for r in &scan.records {
            let (k, d) = dedup::key_of_ref(r);
            if d >= first_day {
                index.insert(k, d);
            }
        }
        let since = meta.modified().unwrap_or_else(|_| SystemTime::now());
        segments.map.insert(id, SegInfo { bytes: len, since });
    }
    report.dedup_keys = index.len() as u64;
    let next = report
        .compaction_recovery
        .max_id
        .max(segments.map.keys().next_back().copied().unwrap_or(0))
        .max(newest.map_or(0, |(_, b)| b))
        + 1;
    let seg = ActiveSegment::create(&layout.log, next)?;
    segments.active = next;
    segments.map.insert(
        next,
        SegInfo {
            bytes: HEADER_LEN,
            since: SystemTime::now(),
        },
    );
    Ok((index, segments, report, seg))
}

impl Writer {
    fn run(mut self) {
        let mut pending: HashSet<Key, BuildHasherDefault<KeyHasher>> = HashSet::default();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut rotates = Vec::new();
            let mut stop = None;
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(a) => {
                        bytes += a.batch.frames().len();
                        appends.push(a);
                    }
                    Cmd::Rotate(r) => rotates.push(r),
                    Cmd::Stop(s) => {
                        stop = Some(s);
                        break;
                    }
                }
                if bytes < self.max_group_bytes {
                    next = self.rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends, &mut pending, &mut buf);
            }
            let full = self.seg.len >= self.segment_bytes;
            if !rotates.is_empty() || full {
                let res = if self.seg.len > HEADER_LEN {
                    self.rotate()
                } else {
                    Ok(())
                };
                let sealed = self.seg.id - 1;
                for r in rotates {
                    let _ = r.send(match &res {
                        Ok(()) => Ok(sealed),
                        Err(e) => Err(StoreError::Closed(format!(
                            "cannot start a new segment: {e}"
                        ))),
                    });
                }
            }
            self.expire();
            if let Some(s) = stop {
                let _ = s.send(());
                return;
            }
        }
    }

    fn commit(
        &mut self,
        appends: Vec<AppendReq>,
        pending: &mut HashSet<Key, BuildHasherDefault<KeyHasher>>,
        buf: &mut Vec<u8>,
    ) {
        if let Some(reason) = &self.poisoned {
            for a in appends {
                let _ = a.reply.send(Err(SinkError::Io(reason.clone())));
            }
            return;
        }
        pending.clear();
        buf.clear();
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut accepted_days = Vec::new();
        let mut counts = [[0u64; 2]; 2];
        for a in &appends {
            let mut out = Vec::with_capacity(a.batch.len());
            for (i, meta) in a.batch.meta().iter().enumerate() {
                let (key, day) = meta.key;
                let k = kind_index(meta.kind);
                if self.index.contains(&key) || !pending.insert(key) {
                    out.push(Outcome::Duplicate);
                    counts[k][1] += 1;
                } else {
                    buf.extend_from_slice(a.batch.frame(i));
                    accepted_days.push((key, day));
                    out.push(Outcome::Accepted);
                    counts[k][0] += 1;
                }
            }
            outcomes.push(out);
        }
        let inner = self.inner.upgrade();
        let started = Instant::now();
        if !buf.is_empty() {
            if let Err(f) = self.seg.append_durable(buf) {
                if let Some(inner) = &inner {
                    inner.metrics.append_errors.fetch_add(1, Ordering::Relaxed);
                }
                let msg = f.error.to_string();
                tracing::error!(error = %msg, rolled_back = f.rolled_back, "log append failed");
                if !f.rolled_back {
                    self.poisoned = Some(format!("log unusable after a failed append: {msg}"));
                }
                for a in appends {
                    let _ = a.reply.send(Err(SinkError::Io(msg.clone())));
                }
                return;
            }
        }
        for (k, d) in accepted_days {
            self.index.insert(k, d);
        }
        self.index.grow_ahead();
        if let Some(inner) = &inner {
            let m = &inner.metrics;
            if !buf.is_empty() {
                m.fsyncs.fetch_add(1, Ordering::Relaxed);
                m.fsync_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.log_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            for (k, [accepted, duplicates]) in counts.iter().enumerate() {
                m.accepted[k].fetch_add(*accepted, Ordering::Relaxed);
                m.duplicates[k].fetch_add(*duplicates, Ordering::Relaxed);
            }
            m.dedup_keys
                .store(self.index.len() as u64, Ordering::Relaxed);
            m.dedup_bytes
                .store(self.index.memory_bytes() as u64, Ordering::Relaxed);
            if let Ok(mut s) = inner.segments.lock() {
                let len = self.seg.len;
                let info = s.map.entry(self.seg.id).or_insert(SegInfo {
                    bytes: HEADER_LEN,
                    since: SystemTime::now(),
                });
                if info.bytes <= HEADER_LEN {
                    info.since = SystemTime::now();
                }
                info.bytes = len;
            }
        }
        for (a, out) in appends.into_iter().zip(outcomes) {
            let _ = a.reply.send(Ok(out));
        }
    }

    fn rotate(&mut self) -> Result<()> {
        let seg = ActiveSegment::create(&self.layout.log, self.seg.id + 1)?;
        self.seg = seg;
        if let Some(inner) = self.inner.upgrade() {
            if let Ok(mut s) = inner.segments.lock() {
                s.active = self.seg.id;
                s.map.insert(
                    self.seg.id,
                    SegInfo {
                        bytes: HEADER_LEN,
                        since: SystemTime::now(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Forgets keys past the window, once per UTC day.
    fn expire(&mut self) {
        let today = utc_day(crate::record::now_micros());
        if today != self.expired_on {
            self.expired_on = today;
            let first = i32::try_from(today)
                .unwrap_or(i32::MAX)
                .saturating_sub(self.window_days);
            self.index.expire(first);
        }
    }
}
