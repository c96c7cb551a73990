//! Compaction of the store: sealed segments into Parquet, on demand and in
//! the background.
//!
//! The background task checks every `compact_poll` and compacts when the
//! backlog passes `compact_bytes`, when its oldest record passes
//! `compact_age`, or when a failed attempt waits to be retried;
//! [`LocalStore::compact_now`](super::LocalStore::compact_now) compacts
//! immediately. See [`crate::compact`] for the crash-safety argument.
//!
//! After compacting, the background task merges small files
//! ([`crate::merge`]) when files were written since the last merge and
//! `merge_interval` has passed. A merge writes its files without keeping
//! readers out, then publishes them once no reader holds a read lease.
//!
//! Every pass runs under the compaction lock, which retention and deletion
//! take too, so no two of them ever touch a Parquet file at once. The lock
//! holds the range of a failed attempt: a failed compaction is redone with
//! exactly the same segments, so its files are overwritten rather than
//! joined by others. A pass first asks the writer to seal the active
//! segment, then compacts sealed segments oldest first, at most
//! `compact_max_bytes` of log at a time to bound its memory, and drops them
//! from the segment table only once their range has committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Inner;
use crate::compact::{self, CompactionReport, Layout};
use crate::error::{Result, StoreError};
use crate::log;
use crate::merge::{self, MergeReport};

/// How often a merge whose files are written looks for a moment when no
/// reader holds a read lease.
const PUBLISH_POLL: Duration = Duration::from_millis(20);

/// Result of a compaction pass, with the count of one unit's records for
/// a deletion's audit.
#[derive(Default)]
pub(super) struct Compacted {
    pub(super) report: CompactionReport,
    pub(super) unit_records: u64,
}

impl Inner {
    pub(super) async fn compact_now(&self) -> Result<CompactionReport> {
        let mut guard = self.compact_lock.lock().await;
        Ok(self.compact_locked(&mut guard, None).await?.report)
    }

    /// Seals the active segment and compacts every sealed segment. `retry`
    /// (the lock's content) is the range of a failed attempt, which must be
    /// redone exactly. With `count_unit`, also counts that unit's records
    /// among them (a second read of the segments, so only for deletions).
    pub(super) async fn compact_locked(
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
                    m.compacted[2].fetch_add(r.aliases, Ordering::Relaxed);
                    m.parquet_files.fetch_add(r.files, Ordering::Relaxed);
                    if let Ok(mut st) = self.merge_state.lock() {
                        st.0 += r.files;
                    }
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
}

impl Inner {
    /// Merges small files, holding `merging` (no deletion or retention
    /// pass rewrites files meanwhile), in the two phases of
    /// [`crate::merge`]: the merged files are written while readers go on,
    /// then published under the write side of the read lease. With `wait`,
    /// the publication waits for the lease (fairly: later readers wait for
    /// it); without, it happens the first moment no reader holds one, so
    /// a merge never keeps a reader waiting for more than a few renames,
    /// and is given up (its files deleted, its inputs kept) if the store
    /// closes first.
    ///
    /// Compaction goes on meanwhile (a merge holding the compaction lock
    /// stalled it: at 300,000 events/s the backlog passed the shedding
    /// threshold). The two never touch the same files: a merge takes only
    /// ranges below the oldest segment still in the log, and the segments
    /// of a compaction under way, or of a failed one waiting to be redone
    /// as it was, stay in the log until it commits.
    pub(super) async fn merge_with(
        &self,
        merging: tokio::sync::OwnedMutexGuard<()>,
        wait: bool,
    ) -> Result<MergeReport> {
        let Some(opts) = self.opts.merge.clone() else {
            return Ok(MergeReport::default());
        };
        // Every range below the oldest segment still in the log is
        // committed; nothing will ever be compacted into it.
        let below = match self.segments.lock() {
            Ok(s) => s.map.keys().next().copied().unwrap_or(s.active),
            Err(_) => return Err(StoreError::Closed("segment table poisoned".into())),
        };
        if let Ok(mut st) = self.merge_state.lock() {
            *st = (0, Some(Instant::now()));
        }
        let layout = self.layout.clone();
        let prepared =
            tokio::task::spawn_blocking(move || merge::prepare_small_files(&layout, below, &opts))
                .await
                .map_err(|e| StoreError::Closed(format!("merge task failed: {e}")))?;
        let res = match prepared {
            Ok((pending, mut report)) if !pending.is_empty() => {
                match self.publication_lease(wait).await {
                    Some(lease) => {
                        let published =
                            tokio::task::spawn_blocking(move || merge::publish(pending))
                                .await
                                .map_err(|e| {
                                    StoreError::Closed(format!("merge task failed: {e}"))
                                })?;
                        drop(lease);
                        published.map(|p| {
                            report.add(&p);
                            report
                        })
                    }
                    None => {
                        merge::discard(pending);
                        Ok(report)
                    }
                }
            }
            other => other.map(|(_, report)| report),
        };
        drop(merging);
        let m = &self.metrics;
        match res {
            Ok(r) => {
                m.merged_files
                    .fetch_add(r.parquet_merged + r.keys_merged, Ordering::Relaxed);
                Ok(r)
            }
            Err(e) => {
                m.merge_errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut st) = self.merge_state.lock() {
                    st.0 += 1;
                }
                Err(e)
            }
        }
    }

    /// The write side of the read lease, for publishing a merge: awaited
    /// with `wait`; else taken the first moment no reader holds the lease
    /// (polled every [`PUBLISH_POLL`]), or none once the store is closed.
    async fn publication_lease(
        &self,
        wait: bool,
    ) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        if wait {
            return Some(Arc::clone(&self.read_lease).write_owned().await);
        }
        loop {
            if let Ok(lease) = Arc::clone(&self.read_lease).try_write_owned() {
                return Some(lease);
            }
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            tokio::time::sleep(PUBLISH_POLL).await;
        }
    }

    /// Whether the background task should merge now.
    fn merge_due(&self) -> bool {
        self.opts.merge.is_some()
            && self.merge_state.lock().is_ok_and(|st| {
                st.0 > 0 && st.1.is_none_or(|t| t.elapsed() >= self.opts.merge_interval)
            })
    }
}

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

/// The background compactor: runs until the store's shutdown notifies
/// `stop_compactor`. Merges run beside it as their own task, so that
/// compaction keeps up while one runs; the loop waits for the last one
/// before returning.
pub(super) async fn background(inner: Arc<Inner>) {
    let mut merging: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(inner.opts.compact_poll) => {}
            () = inner.stop_compactor.notified() => break,
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
                    () = inner.stop_compactor.notified() => break,
                }
                continue;
            }
        }
        if merging.as_ref().is_some_and(|m| m.is_finished()) {
            merging = None;
        }
        if merging.is_none() && inner.merge_due() {
            // A deletion or retention pass holds the files: merge at a
            // later poll.
            if let Ok(guard) = Arc::clone(&inner.merge_lock).try_lock_owned() {
                let inner = Arc::clone(&inner);
                merging = Some(tokio::spawn(async move {
                    if let Err(e) = inner.merge_with(guard, false).await {
                        tracing::warn!(error = %e, "merging small files failed; will retry");
                    }
                }));
            }
        }
    }
    if let Some(m) = merging {
        let _ = m.await;
    }
}
