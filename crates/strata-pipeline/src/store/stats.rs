//! The store's counters and gauges, and their Prometheus text.
//!
//! The writer, the compactor and the public operations only bump these
//! atomics, so reporting costs the append path no lock. Counters are
//! relaxed: `/metrics` needs each figure to be current, not a consistent
//! snapshot of all of them. The backlog gauges (segments, backlog bytes,
//! compaction lag) are not kept here but read from the segment table when
//! rendered, so they can never drift from what the compactor will see.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{disk_free, Inner};
use crate::dedup::Index;
use crate::record::Kind;

#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) accepted: [AtomicU64; KINDS],
    pub(super) duplicates: [AtomicU64; KINDS],
    pub(super) log_bytes: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) fsync_micros: AtomicU64,
    pub(super) append_errors: AtomicU64,
    pub(super) compactions: AtomicU64,
    pub(super) compaction_errors: AtomicU64,
    pub(super) compacted: [AtomicU64; KINDS],
    pub(super) parquet_files: AtomicU64,
    pub(super) merged_files: AtomicU64,
    pub(super) merge_errors: AtomicU64,
    pub(super) compaction_micros: AtomicU64,
    pub(super) dedup_keys: AtomicU64,
    pub(super) dedup_bytes: AtomicU64,
    pub(super) retention_rows: AtomicU64,
    pub(super) deleted_rows: AtomicU64,
    pub(super) recovered_torn_bytes: AtomicU64,
}

impl Metrics {
    /// Sets the deduplication index gauges to the size of `index`.
    pub(super) fn set_index(&self, index: &Index) {
        self.dedup_keys.store(index.len() as u64, Ordering::Relaxed);
        self.dedup_bytes
            .store(index.memory_bytes() as u64, Ordering::Relaxed);
    }
}

/// The number of record kinds, slots of the per-kind counters.
pub(super) const KINDS: usize = 3;

/// The slot of `k` in the per-kind counters.
pub(super) fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Exposure => 0,
        Kind::Event => 1,
        Kind::Alias => 2,
    }
}

/// The `kind` label of the per-kind counters' slots.
const KIND_LABELS: [&str; KINDS] = ["exposure", "event", "alias"];

impl Inner {
    pub(super) fn render_metrics(&self, out: &mut String) {
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
        for (i, kind) in KIND_LABELS.iter().enumerate() {
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
        let compacted: Vec<(String, String)> = KIND_LABELS
            .iter()
            .zip(&m.compacted)
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), get(n).to_string()))
            .collect();
        let compacted: Vec<(&str, String)> = compacted
            .iter()
            .map(|(l, v)| (l.as_str(), v.clone()))
            .collect();
        metric(
            "compacted_records_total",
            "counter",
            "Records written to Parquet by the compactor, by kind.",
            &compacted,
        );
        metric(
            "parquet_files_written_total",
            "counter",
            "Parquet files written by the compactor.",
            &[("", get(&m.parquet_files).to_string())],
        );
        metric(
            "merged_files_total",
            "counter",
            "Small Parquet and key files merged into larger ones.",
            &[("", get(&m.merged_files).to_string())],
        );
        metric(
            "merge_errors_total",
            "counter",
            "Merges of small files that failed (retried).",
            &[("", get(&m.merge_errors).to_string())],
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
