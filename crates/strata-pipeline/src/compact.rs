//! Compaction: sealed log segments → partitioned Parquet, crash-safely.
//!
//! A compaction takes a contiguous range of sealed segments `first..=last`
//! and runs three durable steps:
//!
//! 1. write the records as Parquet, one file `seg-<first>-<last>.parquet`
//!    per (kind, date, partition) present ([`crate::parquet::write_records`],
//!    each file atomic);
//! 2. write the range's deduplication keys `dedup/<first>-<last>.keys`
//!    atomically — **the commit point**;
//! 3. delete the segments.
//!
//! A crash after 1 but before 2 leaves Parquet files of an uncommitted
//! range whose segments all still exist; recovery deletes those files and
//! the segments are compacted again. A crash after 2 leaves some segments
//! of a committed range; recovery deletes them. Either way every record is
//! in exactly one place: a segment or a committed Parquet file. A
//! compaction that fails while running is retried with exactly the same
//! range, so its files are overwritten rather than joined by others.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::dedup::{key_of_ref, list_key_files, write_key_file};
use crate::error::{Result, StoreError};
use crate::log::{list_segments, read_segment_into, scan_refs, segment_path, sync_dir};
use crate::merge::Ranges;
use crate::parquet::{list_parquet_files, write_record_refs, WriteOptions};
use crate::record::RecordRef;

/// The directories of a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory.
    pub root: PathBuf,
    /// `log/`: segments.
    pub log: PathBuf,
    /// `dedup/`: key files of compacted ranges.
    pub dedup: PathBuf,
    /// `parquet/`: the analysis input.
    pub parquet: PathBuf,
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            log: root.join("log"),
            dedup: root.join("dedup"),
            parquet: root.join("parquet"),
        }
    }

    /// Creates the directories.
    pub fn create(&self) -> Result<()> {
        for d in [&self.root, &self.log, &self.dedup, &self.parquet] {
            fs::create_dir_all(d).map_err(|e| StoreError::io("create directory", d, e))?;
        }
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        sync_dir(&self.root)
    }
}

/// The file stem of the Parquet files of a segment range.
pub fn range_stem(first: u64, last: u64) -> String {
    Ranges::Segments.stem(first, last)
}

/// The segment range of a Parquet file name (`seg-<first>-<last>.parquet`).
pub(crate) fn parse_range_stem(file_name: &str) -> Option<(u64, u64)> {
    Ranges::Segments.parse(file_name)
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactionReport {
    /// Segments compacted (and deleted).
    pub segments: u64,
    /// Log bytes compacted.
    pub log_bytes: u64,
    /// Exposure rows written.
    pub exposures: u64,
    /// Event rows written.
    pub events: u64,
    /// Alias rows written.
    pub aliases: u64,
    /// Parquet files written.
    pub files: u64,
    /// Records lost to damage found in sealed segments (0 unless a disk
    /// corrupted data; see the store's warnings).
    pub damaged_segments: u64,
}

impl CompactionReport {
    /// Adds another report's counts.
    pub fn add(&mut self, o: &CompactionReport) {
        self.segments += o.segments;
        self.log_bytes += o.log_bytes;
        self.exposures += o.exposures;
        self.events += o.events;
        self.aliases += o.aliases;
        self.files += o.files;
        self.damaged_segments += o.damaged_segments;
    }
}

/// Buffers that compactions read segments into, kept from one compaction to
/// the next. Reading a segment into a fresh buffer faults in every page
/// anew, which on the virtual machines measured cost as much as a fifth of
/// compaction's CPU; a kept buffer's pages are already mapped. Holds about
/// one compaction's worth of segments (`StoreOptions::compact_max_bytes`).
#[derive(Debug, Default)]
pub struct SegmentBuffers(Vec<Vec<u8>>);

/// Compacts the sealed segments `ids` (contiguous, ascending). Blocking.
pub fn compact_range(
    layout: &Layout,
    ids: &[u64],
    partitions: u32,
    row_group_rows: usize,
) -> Result<CompactionReport> {
    compact_range_with(
        layout,
        ids,
        partitions,
        row_group_rows,
        &mut SegmentBuffers::default(),
    )
}

/// [`compact_range`], reading the segments into `buffers` (and leaving
/// them there, emptied, for the next compaction).
pub fn compact_range_with(
    layout: &Layout,
    ids: &[u64],
    partitions: u32,
    row_group_rows: usize,
    buffers: &mut SegmentBuffers,
) -> Result<CompactionReport> {
    let mut segments = Vec::with_capacity(ids.len());
    let result = compact_buffers(
        layout,
        ids,
        partitions,
        row_group_rows,
        buffers,
        &mut segments,
    );
    for (_, mut bytes) in segments {
        bytes.clear();
        buffers.0.push(bytes);
    }
    // Largest first, so the next compaction's segments find room.
    buffers
        .0
        .sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
    buffers.0.truncate(ids.len());
    result
}

fn compact_buffers(
    layout: &Layout,
    ids: &[u64],
    partitions: u32,
    row_group_rows: usize,
    buffers: &mut SegmentBuffers,
    segments: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<CompactionReport> {
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return Ok(CompactionReport::default());
    };
    let mut report = CompactionReport {
        segments: ids.len() as u64,
        ..Default::default()
    };
    // The records borrow their strings from the segments' bytes: no
    // per-record allocation between the log and the Arrow columns.
    for &id in ids {
        let path = segment_path(&layout.log, id);
        let mut bytes = buffers.0.pop().unwrap_or_default();
        read_segment_into(&path, &mut bytes)?;
        report.log_bytes += bytes.len() as u64;
        segments.push((path, bytes));
    }
    let mut scans: Vec<Vec<RecordRef<'_>>> = Vec::with_capacity(segments.len());
    for (path, bytes) in segments.iter() {
        let scan = scan_refs(bytes);
        if let Some(damage) = &scan.damage {
            if scan.valid_len != bytes.len() as u64 {
                report.damaged_segments += 1;
                tracing::warn!(segment = %path.display(), %damage, "sealed segment damaged; compacting its valid prefix");
            }
        }
        scans.push(scan.records);
    }
    let records = || scans.iter().flatten();
    for r in records() {
        match r {
            RecordRef::Exposure(_) => report.exposures += 1,
            RecordRef::Event(_) => report.events += 1,
            RecordRef::Alias(_) => report.aliases += 1,
        }
    }
    let opts = WriteOptions {
        partitions,
        file_stem: range_stem(first, last),
        row_group_rows,
    };
    let files = write_record_refs(&layout.parquet, records(), &opts)?;
    report.files = files.len() as u64;
    let keys: Vec<_> = records().map(key_of_ref).collect();
    drop(scans);
    write_key_file(&layout.dedup, first, last, &keys)?;
    for &id in ids {
        let path = segment_path(&layout.log, id);
        fs::remove_file(&path).map_err(|e| StoreError::io("remove compacted segment", &path, e))?;
    }
    sync_dir(&layout.log)?;
    Ok(report)
}

/// What start-up recovery of compactions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionRecovery {
    /// Segments of committed ranges deleted (the crash came after commit).
    pub committed_segments_removed: u64,
    /// Parquet files of uncommitted ranges deleted (the crash came before).
    pub uncommitted_files_removed: u64,
    /// Temporary files removed.
    pub temp_files_removed: u64,
    /// Inputs of merges of small files that a crash cut short, deleted
    /// (their rows are in the merged file; see [`crate::merge`]).
    pub merge_inputs_removed: u64,
    /// The largest segment id any file refers to (segment, key file or
    /// Parquet file name); new segments get larger ids.
    pub max_id: u64,
}

/// Finishes or undoes the compactions a crash interrupted. Must run before
/// the log is replayed.
pub fn recover(layout: &Layout) -> Result<CompactionRecovery> {
    let mut out = CompactionRecovery {
        merge_inputs_removed: crate::merge::recover(layout)?.inputs_removed,
        ..Default::default()
    };
    let committed = list_key_files(&layout.dedup)?;
    let committed_set: BTreeSet<(u64, u64)> = committed.iter().copied().collect();
    let mut remaining = BTreeSet::new();
    for id in list_segments(&layout.log)? {
        out.max_id = out.max_id.max(id);
        if committed.iter().any(|&(a, b)| (a..=b).contains(&id)) {
            let p = segment_path(&layout.log, id);
            fs::remove_file(&p).map_err(|e| StoreError::io("remove compacted segment", &p, e))?;
            out.committed_segments_removed += 1;
        } else {
            remaining.insert(id);
        }
    }
    if out.committed_segments_removed > 0 {
        sync_dir(&layout.log)?;
    }
    for &(_, b) in &committed {
        out.max_id = out.max_id.max(b);
    }
    for f in list_parquet_files(&layout.parquet)? {
        let Some((a, b)) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_range_stem)
        else {
            continue;
        };
        out.max_id = out.max_id.max(b);
        if !committed_set.contains(&(a, b)) && remaining.range(a..=b).next().is_some() {
            fs::remove_file(&f)
                .map_err(|e| StoreError::io("remove uncommitted parquet file", &f, e))?;
            out.uncommitted_files_removed += 1;
        }
    }
    out.temp_files_removed += remove_temp_files(&layout.parquet)?;
    out.temp_files_removed += remove_temp_files(&layout.dedup)?;
    Ok(out)
}

/// Removes `.*.tmp` files under `dir`: leftovers of writes a crash cut
/// short (their targets were never renamed into place).
fn remove_temp_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| StoreError::io("list directory", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &d, e))?;
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(&p).map_err(|e| StoreError::io("remove temporary file", &p, e))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::sample_event;
    use crate::log::{encode_frame, ActiveSegment};
    use crate::parquet::tests::{mixed_records, read_back, sorted};
    use crate::parquet::write_records;
    use crate::record::Record;

    fn segment(layout: &Layout, id: u64, from: u64, n: u64) {
        let mut seg = ActiveSegment::create(&layout.log, id).unwrap();
        let mut frames = Vec::new();
        for i in from..from + n {
            encode_frame(&sample_event(i), &mut frames);
        }
        seg.append_durable(&frames).unwrap();
    }

    fn rows(layout: &Layout) -> usize {
        list_parquet_files(&layout.parquet)
            .unwrap()
            .iter()
            .map(|f| {
                crate::parquet::read_file(f)
                    .unwrap()
                    .1
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn compaction_stores_every_field_of_every_logged_record() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let records = mixed_records();
        for (id, chunk) in (1..).zip(records.chunks(120)) {
            let mut seg = ActiveSegment::create(&layout.log, id).unwrap();
            let mut frames = Vec::new();
            for r in chunk {
                encode_frame(r, &mut frames);
            }
            seg.append_durable(&frames).unwrap();
        }
        let ids = list_segments(&layout.log).unwrap();
        let report = compact_range(&layout, &ids, 16, 64).unwrap();
        assert_eq!((report.events, report.exposures), (300, 40));
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(records));
    }

    #[test]
    fn kept_segment_buffers_carry_nothing_into_the_next_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let mut buffers = SegmentBuffers::default();
        // Larger segments first, so the second compaction reads shorter
        // segments into buffers that held longer ones.
        segment(&layout, 1, 0, 300);
        segment(&layout, 2, 300, 300);
        compact_range_with(&layout, &[1, 2], 16, 1000, &mut buffers).unwrap();
        assert_eq!(buffers.0.len(), 2);
        assert!(buffers.0.iter().all(|b| b.is_empty() && b.capacity() > 0));
        segment(&layout, 3, 600, 50);
        let r = compact_range_with(&layout, &[3], 16, 1000, &mut buffers).unwrap();
        assert_eq!(r.events, 50);
        assert_eq!(
            buffers.0.len(),
            1,
            "at most one buffer per segment of the last range"
        );
        assert_eq!(
            sorted(read_back(&layout.parquet)),
            sorted((0..650).map(sample_event).collect())
        );
    }

    #[test]
    fn compaction_is_idempotent_across_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        segment(&layout, 1, 0, 100);
        segment(&layout, 2, 100, 100);
        // Crash after the Parquet files, before the commit: recovery removes
        // the files, the segments stay.
        let records: Vec<Record> = (0..200).map(sample_event).collect();
        write_records(
            &layout.parquet,
            &records[..150],
            &WriteOptions::new(range_stem(1, 2)),
        )
        .unwrap();
        let rec = recover(&layout).unwrap();
        assert!(rec.uncommitted_files_removed > 0);
        assert_eq!(rows(&layout), 0);
        assert_eq!(list_segments(&layout.log).unwrap(), vec![1, 2]);
        // A full compaction, then the segments reappear as if the crash came
        // before their deletion: recovery deletes them, rows count once.
        let saved: Vec<_> = [1, 2]
            .iter()
            .map(|&i| fs::read(segment_path(&layout.log, i)).unwrap())
            .collect();
        let report = compact_range(&layout, &[1, 2], 16, 1000).unwrap();
        assert_eq!(report.events, 200);
        assert_eq!(rows(&layout), 200);
        fs::write(segment_path(&layout.log, 2), &saved[1]).unwrap();
        let rec = recover(&layout).unwrap();
        assert_eq!(rec.committed_segments_removed, 1);
        assert_eq!(rec.uncommitted_files_removed, 0);
        assert_eq!(rec.max_id, 2);
        assert!(list_segments(&layout.log).unwrap().is_empty());
        assert_eq!(rows(&layout), 200);
        // Redoing a committed range overwrites its files.
        for (i, b) in saved.iter().enumerate() {
            fs::write(segment_path(&layout.log, i as u64 + 1), b).unwrap();
        }
        compact_range(&layout, &[1, 2], 16, 1000).unwrap();
        assert_eq!(rows(&layout), 200);
    }
}
