//! [`StreamStore`]: the pipeline of a node that ingests through NATS
//! JetStream instead of the embedded log.
//!
//! Any number of nodes publish to one stream ([`JetStreamSink`]: a record is
//! acknowledged once JetStream has acknowledged it). The Parquet tree is
//! written by one compactor at a time ([`NatsCompactor`] on the stream's
//! durable consumer): the node whose `may_compact` gate is open — in
//! `strata serve`, the holder of the jobs lease. A node whose gate opens
//! opens the compactor, which first removes what a stopped compactor wrote
//! but never acknowledged and takes its undelivered batch over; a node whose
//! gate closes drops it after its current round. The compactor also holds
//! the Parquet tree's writer lock (`.writer.lock` in its root, an
//! exclusive file lock), so two nodes sharing a tree on one volume never
//! write it at once, whatever their leases say. When the tree lives on an
//! object store ([`StreamStoreOptions::mirror`]), the node's directory is
//! a working copy: pulled before the compactor opens, pushed before every
//! acknowledgement and after every rewrite ([`crate::mirror`]).
//!
//! The store offers what [`crate::LocalStore`] offers the jobs on the same
//! Parquet layout: [`compact_now`](StreamStore::compact_now) (every message
//! the stream held when called), [`read_lease`](StreamStore::read_lease),
//! unit deletion and retention — the last three only on the compacting node,
//! since they rewrite files the compactor writes. Acknowledged messages are
//! purged from the stream, so it holds only the backlog and a deleted unit
//! leaves no copy there once compacted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, RwLock};

use crate::compact::CompactionReport;
use crate::delete::{delete_unit_parquet, DeletionReport};
use crate::mirror::Mirror;
use crate::nats::{CompactorOptions, JetStreamSink, NatsCompactor, NatsError, NatsOptions};
use crate::retention::{self, RetentionPolicy, RetentionReport};
use crate::{Batch, BoxFuture, Outcome, Pressure, ReadLease, Sink, SinkError};

/// How long an operation waits for a compactor whose gate has just opened.
pub const OPENING: Duration = Duration::from_secs(10);

/// Whether this node may compact now (checked before every round).
pub type CompactGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where a [`StreamStore`] reads and writes.
#[derive(Debug, Clone)]
pub struct StreamStoreOptions {
    /// The NATS server (`nats://host:4222`).
    pub url: String,
    /// The stream, its subjects and the compactor's durable consumer.
    pub nats: NatsOptions,
    /// The compactor's batches and merges (`purge_acknowledged` is set by
    /// the store).
    pub compactor: CompactorOptions,
    /// The Parquet root (`DATA/parquet`).
    pub parquet_dir: PathBuf,
    /// Rows per row group of files rewritten by deletion and retention.
    pub row_group_rows: usize,
    /// The object store `parquet_dir` is the working copy of, when the
    /// tree lives on one ([`crate::mirror`]).
    pub mirror: Option<Arc<Mirror>>,
}

/// The pipeline over JetStream; see the module documentation.
pub struct StreamStore {
    opts: StreamStoreOptions,
    sink: JetStreamSink,
    compactor: Mutex<Option<NatsCompactor>>,
    /// The tree's writer lock, held with the compactor.
    writer: std::sync::Mutex<Option<std::fs::File>>,
    /// The gate is open but another process holds the writer lock.
    blocked: AtomicBool,
    read_lease: Arc<RwLock<()>>,
    gate: CompactGate,
    closed: AtomicBool,
    stop: Notify,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    compacting: AtomicBool,
    records_compacted: AtomicU64,
    rounds_failed: AtomicU64,
}

impl std::fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Why a [`StreamStore`] operation could not run.
fn not_compacting(what: &str) -> NatsError {
    NatsError::NotCompacting {
        what: what.to_owned(),
    }
}

impl StreamStore {
    /// Connects to the stream (creating it if needed) and starts the
    /// compaction task, which compacts while `gate` is open.
    pub async fn open(opts: StreamStoreOptions, gate: CompactGate) -> Result<Arc<Self>, NatsError> {
        let sink = JetStreamSink::connect(&opts.url, opts.nats.clone()).await?;
        let store = Arc::new(Self {
            opts: StreamStoreOptions {
                compactor: CompactorOptions {
                    purge_acknowledged: true,
                    ..opts.compactor.clone()
                },
                ..opts
            },
            sink,
            compactor: Mutex::new(None),
            writer: std::sync::Mutex::new(None),
            blocked: AtomicBool::new(false),
            read_lease: Arc::default(),
            gate,
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            task: std::sync::Mutex::new(None),
            compacting: AtomicBool::new(false),
            records_compacted: AtomicU64::new(0),
            rounds_failed: AtomicU64::new(0),
        });
        let task = tokio::spawn(Arc::clone(&store).compaction());
        if let Ok(mut t) = store.task.lock() {
            *t = Some(task);
        }
        Ok(store)
    }

    /// The root of the Parquet tree.
    pub fn parquet_dir(&self) -> &Path {
        &self.opts.parquet_dir
    }

    /// Whether this node holds the compactor now.
    pub fn is_compacting(&self) -> bool {
        self.compacting.load(Ordering::Acquire)
    }

    /// Compacts every message the stream holds now into Parquet. Only on
    /// the compacting node.
    pub async fn compact_now(&self) -> Result<CompactionReport, NatsError> {
        let mut guard = self.compactor_guard("compaction").await?;
        let Some(c) = guard.as_mut() else {
            return Err(not_compacting("compaction"));
        };
        let r = c.drain().await?;
        self.records_compacted
            .fetch_add(r.records as u64, Ordering::Relaxed);
        Ok(report(&r))
    }

    /// A lease under which no file of the tree changes under a reader
    /// (merges, deletions and retention wait; compaction only adds files).
    pub async fn read_lease(&self) -> ReadLease {
        ReadLease {
            _guard: Arc::clone(&self.read_lease).read_owned().await,
        }
    }

    /// Removes every stored record of `unit_id` (and of the anonymous ids
    /// aliased to it): compacts the stream, then rewrites the unit's
    /// partition (see [`crate::delete`]). Only on the compacting node.
    pub async fn delete_unit(&self, unit_id: &str) -> Result<DeletionReport, NatsError> {
        let _lease = Arc::clone(&self.read_lease).write_owned().await;
        let mut guard = self.compactor_guard("a unit's deletion").await?;
        let Some(c) = guard.as_mut() else {
            return Err(not_compacting("a unit's deletion"));
        };
        c.drain().await?;
        let (root, unit) = (self.opts.parquet_dir.clone(), unit_id.to_owned());
        let (partitions, rg) = (self.opts.nats.partitions.max(1), self.opts.row_group_rows);
        let r =
            tokio::task::spawn_blocking(move || delete_unit_parquet(&root, &unit, partitions, rg))
                .await
                .map_err(|e| NatsError::JetStream {
                    what: "deletion task".into(),
                    reason: e.to_string(),
                })??;
        self.push().await?;
        Ok(r)
    }

    /// Applies a retention policy at `now_micros` to the Parquet tree. Only
    /// on the compacting node.
    pub async fn apply_retention(
        &self,
        now_micros: i64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport, NatsError> {
        let _lease = Arc::clone(&self.read_lease).write_owned().await;
        let guard = self.compactor_guard("retention").await?;
        let (root, policy) = (self.opts.parquet_dir.clone(), policy.clone());
        let rg = self.opts.row_group_rows;
        let r =
            tokio::task::spawn_blocking(move || retention::apply(&root, now_micros, &policy, rg))
                .await
                .map_err(|e| NatsError::JetStream {
                    what: "retention task".into(),
                    reason: e.to_string(),
                })??;
        self.push().await?;
        drop(guard);
        Ok(r)
    }

    /// The compactor, locked. A node whose gate has just opened waits for
    /// the compaction task to open it (up to [`OPENING`]); a node whose
    /// gate is closed is refused at once.
    async fn compactor_guard(
        &self,
        what: &str,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<NatsCompactor>>, NatsError> {
        let waited = Instant::now();
        loop {
            let guard = self.compactor.lock().await;
            if guard.is_some() {
                return Ok(guard);
            }
            drop(guard);
            // Another process holds the tree: waiting would not help.
            if !(self.gate)() || self.blocked.load(Ordering::Acquire) || waited.elapsed() >= OPENING
            {
                return Err(not_compacting(what));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the compactor over the tree: pulled from the object store
    /// first when there is one (recovery must see what the previous
    /// compactor left there), and pushed after (what recovery removed).
    async fn open_compactor(&self) -> Result<NatsCompactor, NatsError> {
        if let Some(m) = &self.opts.mirror {
            let r = m.pull().await?;
            tracing::info!(
                url = m.url(),
                files = r.copied,
                bytes = r.bytes,
                "pulled the parquet tree"
            );
        }
        let mut c = NatsCompactor::open(
            &self.opts.url,
            &self.opts.parquet_dir,
            self.opts.nats.clone(),
            CompactorOptions {
                // Merged here, under the read lease.
                merge_every: Duration::MAX,
                ..self.opts.compactor.clone()
            },
        )
        .await?;
        if let Some(m) = &self.opts.mirror {
            m.push().await?;
            c.set_mirror(m.clone());
        }
        Ok(c)
    }

    /// Pushes a rewrite of the tree to the object store, if any.
    async fn push(&self) -> Result<(), NatsError> {
        if let Some(m) = &self.opts.mirror {
            m.push().await?;
        }
        Ok(())
    }

    /// The exclusive lock of the Parquet tree's writer (`.writer.lock` in
    /// its root), or none while another process holds it: two nodes must
    /// never compact into one tree, even when their jobs leases overlap
    /// (a leader cut off from the config store, say). Released when the
    /// file is dropped or the process dies.
    fn writer_lock(&self, waiting: &mut bool) -> Option<std::fs::File> {
        let dir = &self.opts.parquet_dir;
        let path = dir.join(".writer.lock");
        let file = std::fs::create_dir_all(dir).and_then(|()| {
            std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the parquet writer's lock");
                return None;
            }
        };
        match file.try_lock() {
            Ok(()) => {
                *waiting = false;
                Some(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if !std::mem::replace(waiting, true) {
                    tracing::warn!(path = %path.display(), "another process writes this parquet tree; waiting for it to stop");
                }
                None
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::error!(path = %path.display(), error = %e, "cannot lock the parquet tree");
                None
            }
        }
    }

    /// Stops compacting after the current round. Acknowledged records are
    /// in JetStream; nothing else needs draining.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        *self.compactor.lock().await = None;
        *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.compacting.store(false, Ordering::Release);
    }

    /// Appends Prometheus text lines of the store's metrics to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP strata_jetstream_compacting Whether this node compacts the stream into Parquet.\n\
             # TYPE strata_jetstream_compacting gauge\nstrata_jetstream_compacting {}",
            u8::from(self.is_compacting())
        );
        let _ = writeln!(
            out,
            "# HELP strata_jetstream_records_compacted_total Records this node wrote from the stream to Parquet.\n\
             # TYPE strata_jetstream_records_compacted_total counter\nstrata_jetstream_records_compacted_total {}",
            self.records_compacted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_jetstream_rounds_failed_total Compaction rounds that failed and were retried.\n\
             # TYPE strata_jetstream_rounds_failed_total counter\nstrata_jetstream_rounds_failed_total {}",
            self.rounds_failed.load(Ordering::Relaxed)
        );
    }

    /// The compaction task: opens the compactor when the gate opens, runs
    /// rounds while it is open, merges small files when no reader holds a
    /// lease, and drops the compactor when the gate closes.
    async fn compaction(self: Arc<Self>) {
        let merge_every = self.opts.compactor.merge_every;
        let mut last_merge = Instant::now();
        let mut waiting = false;
        while !self.closed.load(Ordering::SeqCst) {
            let want = (self.gate)();
            if want != self.is_compacting() {
                // The lease first, as deletion and retention take them: the
                // opening removes unacknowledged files.
                let _lease = Arc::clone(&self.read_lease).write_owned().await;
                let mut guard = self.compactor.lock().await;
                let lock = if want {
                    self.writer_lock(&mut waiting)
                } else {
                    None
                };
                self.blocked.store(waiting, Ordering::Release);
                if let Some(lock) = lock {
                    match self.open_compactor().await {
                        Ok(c) => {
                            tracing::info!(stream = %self.opts.nats.stream, "this node compacts the stream");
                            *guard = Some(c);
                            *self.writer.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(lock);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open the jetstream compactor");
                        }
                    }
                } else if !want {
                    tracing::info!("this node no longer compacts the stream");
                    *guard = None;
                    *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                self.compacting.store(guard.is_some(), Ordering::Release);
            }
            let ran = {
                let mut guard = self.compactor.lock().await;
                match guard.as_mut() {
                    None => None,
                    Some(c) => {
                        let r = c.run_once().await;
                        if let Ok(r) = &r {
                            self.records_compacted
                                .fetch_add(r.records as u64, Ordering::Relaxed);
                        }
                        if self.opts.compactor.merge.is_some()
                            && last_merge.elapsed() >= merge_every
                        {
                            if let Ok(_lease) = Arc::clone(&self.read_lease).try_write_owned() {
                                last_merge = Instant::now();
                                if let Err(e) = c.merge_now().await {
                                    tracing::warn!(error = %e, "merging small jetstream parquet files failed");
                                }
                            }
                        }
                        Some(r)
                    }
                }
            };
            let pause = match ran {
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    self.rounds_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "jetstream compaction round failed");
                    Duration::from_secs(1)
                }
                // Not compacting: look at the gate again soon.
                None => Duration::from_millis(500),
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.notified() => return,
            }
        }
    }
}

fn report(r: &crate::nats::RoundReport) -> CompactionReport {
    CompactionReport {
        exposures: r.exposures as u64,
        events: r.events as u64,
        aliases: r.aliases as u64,
        files: r.files as u64,
        ..CompactionReport::default()
    }
}

impl Sink for StreamStore {
    fn append(&self, records: Batch) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>> {
        if self.closed.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(SinkError::Unavailable {
                    reason: "shutting down".into(),
                    retry_after: Duration::from_secs(1),
                })
            });
        }
        self.sink.append(records)
    }

    fn pressure(&self) -> Pressure {
        self.sink.pressure()
    }
}
