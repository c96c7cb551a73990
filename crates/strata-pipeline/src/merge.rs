//! Merging the small files compaction leaves behind, crash-safely.
//!
//! Every compaction writes one Parquet file per (kind, date, partition) it
//! has records for and one deduplication key file, so a store that compacts
//! a trickle of records every few seconds would gain files in proportion to
//! compaction runs, not to data: a few thousand records sent by one new
//! user became dozens of files, and every analysis pays for each file it
//! opens. A merge replaces a run of small files by one, so the count stays
//! proportional to the data.
//!
//! ## Which files
//!
//! In each directory, the files named after segment ranges
//! (`seg-<first>-<last>.parquet`, `<first>-<last>.keys`) are ordered by
//! range. A *run* is a sequence of consecutive files (no other file of the
//! directory between them) each smaller than [`MergeOptions::small_bytes`],
//! every one of them of ranges below `below` (the oldest segment not yet
//! compacted, so no future compaction can write a range inside a merged
//! one). A run of at least [`MergeOptions::min_files`] files becomes one file
//! named after the union of its ranges, `seg-<first of first>-<last of
//! last>`. Files at the front of a run larger than the rest of it together
//! are left out of it, so a merged file is rewritten only when as many
//! bytes again have arrived behind it: each byte is rewritten a logarithmic
//! number of times, not once per merge.
//!
//! ## Crash safety
//!
//! The merged file is written atomically (temporary name, fsync, rename),
//! then the inputs are deleted. A crash before the rename leaves the inputs
//! (and a temporary file recovery removes); a crash after it leaves the
//! merged file *and* some inputs, whose rows it holds. [`recover`] ends
//! such a merge: in a directory, a file whose range lies strictly inside
//! another file's range is an input of a finished merge and is deleted.
//! Compaction never writes such a file by itself: compaction ranges are
//! disjoint, a retried compaction reuses exactly its range, and merges stay
//! below every segment that may still be compacted. Rows are never in two
//! files after recovery and never in none.
//!
//! ## Readers
//!
//! Between the rename and the last deletion a reader listing the directory
//! would see rows twice. A merge therefore runs in two phases
//! ([`prepare_small_files`], then [`publish`]): the first, which reads,
//! sorts and writes the rows (seconds under load), leaves every merged
//! file under its hidden temporary name, which readers skip; only the
//! second, a rename and a few deletions per file, must keep readers out.
//! Inside the process, readers take a [`crate::store::ReadLease`] and the
//! store publishes only while none is held, so a reader never waits for a
//! merge's rows to be written; a reader in another process detects the
//! state with [`overlapping_files`] and reads again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::SchemaRef;

use crate::compact::Layout;
use crate::dedup::{keys_path, list_key_files, read_key_file, write_key_file};
use crate::error::{Result, StoreError};
use crate::log::sync_dir;
use crate::parquet::{list_parquet_files, publish_file, read_file, write_file_hidden};

/// When and how far small files are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOptions {
    /// A run is merged once it has this many files (default 8).
    pub min_files: usize,
    /// Files at least this large are not merged (default 4 MiB).
    pub small_bytes: u64,
    /// Rows per Parquet row group of a merged file.
    pub row_group_rows: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            min_files: 8,
            small_bytes: 4 << 20,
            row_group_rows: crate::parquet::DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// What a merge pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeReport {
    /// Parquet files written by merges.
    pub parquet_written: u64,
    /// Parquet files merged (and deleted).
    pub parquet_merged: u64,
    /// Key files written by merges.
    pub keys_written: u64,
    /// Key files merged (and deleted).
    pub keys_merged: u64,
}

impl MergeReport {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MergeReport) {
        self.parquet_written += other.parquet_written;
        self.parquet_merged += other.parquet_merged;
        self.keys_written += other.keys_written;
        self.keys_merged += other.keys_merged;
    }
}

/// What the ranges in Parquet file names count: the local log's segment ids
/// (`seg-<first>-<last>`, written by compaction) or JetStream stream
/// sequences (`nats-<first>-<last>`, written by `crate::nats::NatsCompactor`).
/// The two are unrelated sequences, so runs, merges and recovery consider
/// the files of one naming at a time, even in one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ranges {
    /// `seg-<first>-<last>`: segment ids of the local log.
    Segments,
    /// `nats-<first>-<last>`: sequences of the JetStream stream.
    Stream,
}

impl Ranges {
    const ALL: [Ranges; 2] = [Ranges::Segments, Ranges::Stream];

    fn prefix(self) -> &'static str {
        match self {
            Ranges::Segments => "seg-",
            Ranges::Stream => "nats-",
        }
    }

    /// The file stem of range `first..=last`.
    pub fn stem(self, first: u64, last: u64) -> String {
        format!("{}{first:020}-{last:020}", self.prefix())
    }

    /// The range of a Parquet file name of this naming.
    pub(crate) fn parse(self, file_name: &str) -> Option<(u64, u64)> {
        let s = file_name
            .strip_suffix(".parquet")?
            .strip_prefix(self.prefix())?;
        let (a, b) = s.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// The range `(first, last)` a Parquet file of naming `ranges` is named after.
fn parquet_range(path: &Path, ranges: Ranges) -> Option<(u64, u64)> {
    ranges.parse(path.file_name()?.to_str()?)
}

/// A file named after a segment range.
#[derive(Debug, Clone)]
struct Ranged {
    first: u64,
    last: u64,
    bytes: u64,
    path: PathBuf,
}

/// The runs of `files` (sorted by range) worth merging.
fn runs(files: &[Ranged], below: u64, opts: &MergeOptions) -> Vec<Vec<Ranged>> {
    let mut out = Vec::new();
    let mut run: Vec<Ranged> = Vec::new();
    let mut close = |run: &mut Vec<Ranged>| {
        // Leave out front files larger than the rest of the run together.
        let mut rest: u64 = run.iter().map(|f| f.bytes).sum();
        let mut skip = 0;
        for f in run.iter() {
            rest -= f.bytes;
            if f.bytes > rest {
                skip += 1;
            } else {
                break;
            }
        }
        let kept: Vec<Ranged> = run.drain(..).skip(skip).collect();
        if kept.len() >= opts.min_files.max(2) {
            out.push(kept);
        }
    };
    for f in files {
        if f.last < below && f.bytes < opts.small_bytes {
            run.push(f.clone());
        } else {
            close(&mut run);
        }
    }
    close(&mut run);
    out
}

/// Merges runs of small Parquet and key files whose ranges all lie below
/// segment id `below`, and publishes the merged Parquet files at once
/// ([`prepare_small_files`], then [`publish`]). Blocking; nothing else
/// rewrites Parquet meanwhile and no reader is in the tree.
pub fn merge_small_files(layout: &Layout, below: u64, opts: &MergeOptions) -> Result<MergeReport> {
    let (pending, mut report) = prepare_small_files(layout, below, opts)?;
    report.add(&publish(pending)?);
    Ok(report)
}

/// The first phase of [`merge_small_files`], which readers need not wait
/// for: merges the runs of small key files, and writes each merged
/// Parquet file under its hidden temporary name ([`Pending`]). Returns
/// them with what was done to the key files (which readers do not read).
/// Blocking; nothing else may rewrite these files until the merged
/// Parquet files are published or discarded (compaction only adds files
/// of ranges at or above `below`).
pub fn prepare_small_files(
    layout: &Layout,
    below: u64,
    opts: &MergeOptions,
) -> Result<(Vec<Pending>, MergeReport)> {
    let pending = prepare_small_parquet(&layout.parquet, Ranges::Segments, below, opts)?;
    match merge_key_files(layout, below, opts) {
        Ok(report) => Ok((pending, report)),
        Err(e) => {
            discard(pending);
            Err(e)
        }
    }
}

/// Merges the runs of small key files below `below` (see
/// [`prepare_small_files`]).
fn merge_key_files(layout: &Layout, below: u64, opts: &MergeOptions) -> Result<MergeReport> {
    let mut report = MergeReport::default();
    let keys = key_files(&layout.dedup)?;
    for run in runs(&keys, below, opts) {
        // A damaged key file still commits its range; leave such a run alone
        // rather than lose the keys it could not read.
        let mut all = Vec::new();
        let mut readable = true;
        for f in &run {
            match read_key_file(&f.path) {
                Ok(k) => all.extend(k),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable key file; its run is not merged");
                    readable = false;
                    break;
                }
            }
        }
        if !readable {
            continue;
        }
        let (first, last) = (run[0].first, run[run.len() - 1].last);
        write_key_file(&layout.dedup, first, last, &all)?;
        remove_all(run.iter().map(|f| f.path.as_path()), &layout.dedup)?;
        report.keys_written += 1;
        report.keys_merged += run.len() as u64;
    }
    Ok(report)
}

/// Merges runs of small Parquet files of naming `ranges` under the Parquet
/// root `root` whose ranges all lie below `below` (for JetStream: the
/// sequence after the last acknowledged one), and publishes them at once.
/// Blocking; nothing else may write files of this naming meanwhile, and
/// readers must hold off (the local store's read lease) or check
/// [`overlapping_files`].
pub fn merge_small_parquet(
    root: &Path,
    ranges: Ranges,
    below: u64,
    opts: &MergeOptions,
) -> Result<MergeReport> {
    publish(prepare_small_parquet(root, ranges, below, opts)?)
}

/// The merged files of [`merge_small_parquet`], written but not published.
fn prepare_small_parquet(
    root: &Path,
    ranges: Ranges,
    below: u64,
    opts: &MergeOptions,
) -> Result<Vec<Pending>> {
    let mut pending = Vec::new();
    let written = (|| {
        for files in parquet_dirs(root, ranges)?.into_values() {
            for run in runs(&files, below, opts) {
                prepare_parquet(&run, ranges, opts.row_group_rows, &mut pending)?;
            }
        }
        Ok(())
    })();
    match written {
        Ok(()) => Ok(pending),
        Err(e) => {
            // Nothing of a failed pass is published.
            discard(pending);
            Err(e)
        }
    }
}

/// A merged Parquet file written under its hidden temporary name: readers
/// do not see it, and its inputs are still in place. [`publish`] puts it
/// at its name and deletes its inputs; [`discard`] deletes it.
#[derive(Debug)]
#[must_use = "a pending merge is published or discarded"]
pub struct Pending {
    tmp: PathBuf,
    path: PathBuf,
    inputs: Vec<PathBuf>,
}

/// Publishes merged files: each is renamed into place and its inputs are
/// deleted, then the directory is synced. This is the only phase of a
/// merge during which a reader could see rows twice (the caller keeps
/// readers out, as [`crate::store::ReadLease`]s do); it is a rename and a
/// few deletions per file. A merged file one of whose inputs went away is
/// discarded instead, unpublished.
pub fn publish(pending: Vec<Pending>) -> Result<MergeReport> {
    let mut report = MergeReport::default();
    let mut pending = pending.into_iter();
    while let Some(p) = pending.next() {
        if let Some(gone) = p.inputs.iter().find(|i| !i.exists()) {
            tracing::warn!(input = %gone.display(), "an input of a merge went away; its merged file is discarded");
            let _ = fs::remove_file(&p.tmp);
            continue;
        }
        let dir = p.path.parent().unwrap_or(Path::new("."));
        let done = publish_file(&p.tmp, &p.path)
            .and_then(|()| remove_all(p.inputs.iter().map(PathBuf::as_path), dir));
        if let Err(e) = done {
            // Recovery finishes a merge whose rename happened, and removes
            // the temporary files of the others.
            discard(pending.collect());
            let _ = fs::remove_file(&p.tmp);
            return Err(e);
        }
        report.parquet_written += 1;
        report.parquet_merged += p.inputs.len() as u64;
    }
    Ok(report)
}

/// Deletes merged files that will not be published (their inputs stay).
pub fn discard(pending: Vec<Pending>) {
    for p in pending {
        if let Err(e) = fs::remove_file(&p.tmp) {
            tracing::warn!(error = %e, file = %p.tmp.display(), "cannot remove an unpublished merged file; the next start-up will");
        }
    }
}

/// Writes the rows of `run` as one hidden file per stretch of files with
/// the same columns (files written before a column was added keep their
/// own), sorted by time then unit like a compaction's, and adds each to
/// `pending`.
fn prepare_parquet(
    run: &[Ranged],
    ranges: Ranges,
    row_group_rows: usize,
    pending: &mut Vec<Pending>,
) -> Result<()> {
    let mut stretches: Vec<(SchemaRef, Vec<RecordBatch>, Vec<Ranged>)> = Vec::new();
    for f in run {
        let (schema, batches) = read_file(&f.path)?;
        let batches = batches.into_iter().filter(|b| b.num_rows() > 0);
        match stretches.last_mut() {
            Some((s, b, files)) if *s == schema => {
                b.extend(batches);
                files.push(f.clone());
            }
            _ => stretches.push((schema, batches.collect(), vec![f.clone()])),
        }
    }
    for (schema, batches, files) in stretches {
        if files.len() < 2 {
            continue;
        }
        let (first, last) = (files[0].first, files[files.len() - 1].last);
        let dir = files[0]
            .path
            .parent()
            .ok_or_else(|| StoreError::parquet(&files[0].path, "no parent directory"))?;
        let path = dir.join(format!("{}.parquet", ranges.stem(first, last)));
        let all = arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(|e| StoreError::parquet(&path, e))?;
        let sorted = sort_by_time_and_unit(&all, &path)?;
        let tmp = write_file_hidden(&path, schema, &[sorted], row_group_rows)?;
        pending.push(Pending {
            tmp,
            path,
            inputs: files.into_iter().map(|f| f.path).collect(),
        });
    }
    Ok(())
}

/// Deletes the inputs of a finished merge, then makes that durable.
fn remove_all<'a>(inputs: impl IntoIterator<Item = &'a Path>, dir: &Path) -> Result<()> {
    for p in inputs {
        fs::remove_file(p).map_err(|e| StoreError::io("remove merged file", p, e))?;
    }
    sync_dir(dir)
}

/// `batch` ordered by `ts`, then unit (`unit_id`, or an alias's
/// `anonymous_id`), as compaction writes it.
fn sort_by_time_and_unit(batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
    let ts = batch
        .column_by_name("ts")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| StoreError::parquet(path, "no timestamp column `ts`"))?;
    let unit = batch
        .column_by_name("unit_id")
        .or_else(|| batch.column_by_name("anonymous_id"))
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| StoreError::parquet(path, "no string column `unit_id`"))?;
    let n = u32::try_from(batch.num_rows())
        .map_err(|_| StoreError::parquet(path, "too many rows to merge into one file"))?;
    let mut idx: Vec<u32> = (0..n).collect();
    idx.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        ts.value(a)
            .cmp(&ts.value(b))
            .then_with(|| unit.value(a).cmp(unit.value(b)))
    });
    arrow_select::take::take_record_batch(batch, &UInt32Array::from(idx))
        .map_err(|e| StoreError::parquet(path, e))
}

/// The Parquet files of naming `ranges` of every directory under `root`,
/// each directory's sorted by range.
fn parquet_dirs(root: &Path, ranges: Ranges) -> Result<BTreeMap<PathBuf, Vec<Ranged>>> {
    let mut dirs: BTreeMap<PathBuf, Vec<Ranged>> = BTreeMap::new();
    for path in list_parquet_files(root)? {
        let Some((first, last)) = parquet_range(&path, ranges) else {
            continue;
        };
        let Some(dir) = path.parent().map(Path::to_path_buf) else {
            continue;
        };
        let bytes = fs::metadata(&path)
            .map_err(|e| StoreError::io("stat parquet file", &path, e))?
            .len();
        dirs.entry(dir).or_default().push(Ranged {
            first,
            last,
            bytes,
            path,
        });
    }
    for files in dirs.values_mut() {
        files.sort_by_key(|f| (f.first, f.last));
    }
    Ok(dirs)
}

/// The key files of `dir`, sorted by range.
fn key_files(dir: &Path) -> Result<Vec<Ranged>> {
    let mut out = Vec::new();
    for (first, last) in list_key_files(dir)? {
        let path = keys_path(dir, first, last);
        let bytes = fs::metadata(&path)
            .map_err(|e| StoreError::io("stat key file", &path, e))?
            .len();
        out.push(Ranged {
            first,
            last,
            bytes,
            path,
        });
    }
    out.sort_by_key(|f| (f.first, f.last));
    Ok(out)
}

/// Files of `files` (sorted by range) whose range lies inside another's:
/// the inputs of a merge that has written its output.
fn contained(files: &[Ranged]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for f in files {
        if files.iter().any(|g| {
            (g.first, g.last) != (f.first, f.last) && g.first <= f.first && f.last <= g.last
        }) {
            out.push(f.path.clone());
        }
    }
    out
}

/// The files under the Parquet root `root` that are inputs of a merge still
/// being finished (their rows are also in the merged file). Empty when the
/// directory can be read as it is.
pub fn overlapping_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for ranges in Ranges::ALL {
        for files in parquet_dirs(root, ranges)?.values() {
            out.extend(contained(files));
        }
    }
    Ok(out)
}

/// Finishes the merges of Parquet files of naming `ranges` under `root` that
/// a crash interrupted (see [`recover`]); returns the inputs removed.
pub fn recover_parquet(root: &Path, ranges: Ranges) -> Result<u64> {
    let mut removed = 0;
    for (dir, files) in parquet_dirs(root, ranges)? {
        let gone = contained(&files);
        for p in &gone {
            fs::remove_file(p).map_err(|e| StoreError::io("remove merged file", p, e))?;
        }
        if !gone.is_empty() {
            sync_dir(&dir)?;
            removed += gone.len() as u64;
        }
    }
    Ok(removed)
}

/// What [`recover`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeRecovery {
    /// Inputs of finished merges deleted.
    pub inputs_removed: u64,
}

/// Finishes the merges a crash interrupted: deletes every Parquet or key
/// file whose range lies inside another's of the same directory.
pub fn recover(layout: &Layout) -> Result<MergeRecovery> {
    let mut out = MergeRecovery {
        inputs_removed: recover_parquet(&layout.parquet, Ranges::Segments)?,
    };
    let gone = contained(&key_files(&layout.dedup)?);
    for p in &gone {
        fs::remove_file(p).map_err(|e| StoreError::io("remove merged key file", p, e))?;
    }
    if !gone.is_empty() {
        sync_dir(&layout.dedup)?;
        out.inputs_removed += gone.len() as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::sample_event;
    use crate::compact::compact_range;
    use crate::log::{encode_frame, list_segments, ActiveSegment};
    use crate::parquet::tests::{read_back, sorted};
    use crate::record::Record;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        (dir, layout)
    }

    /// Compacts records `from..from + n` as segment `id`, alone.
    fn compact_one(layout: &Layout, id: u64, from: u64, n: u64) {
        let mut seg = ActiveSegment::create(&layout.log, id).unwrap();
        let mut frames = Vec::new();
        for i in from..from + n {
            encode_frame(&sample_event(i), &mut frames);
        }
        seg.append_durable(&frames).unwrap();
        compact_range(layout, &[id], 4, 1000).unwrap();
    }

    /// Compacts 10 records per id of `ids` (`id * 10 ..`), each id a
    /// segment of its own; returns the records.
    fn compact_each(layout: &Layout, ids: std::ops::RangeInclusive<u64>) -> Vec<Record> {
        let mut out = Vec::new();
        for id in ids {
            compact_one(layout, id, id * 10, 10);
            out.extend((id * 10..id * 10 + 10).map(sample_event));
        }
        out
    }

    fn count(layout: &Layout) -> (usize, usize) {
        (
            list_parquet_files(&layout.parquet).unwrap().len(),
            list_key_files(&layout.dedup).unwrap().len(),
        )
    }

    fn opts(min_files: usize) -> MergeOptions {
        MergeOptions {
            min_files,
            small_bytes: 1 << 20,
            row_group_rows: 1000,
        }
    }

    fn ranged(first: u64, bytes: u64) -> Ranged {
        Ranged {
            first,
            last: first,
            bytes,
            path: PathBuf::from(format!("{first}")),
        }
    }

    #[test]
    fn runs_are_consecutive_small_files_below_the_bound() {
        let o = MergeOptions {
            min_files: 3,
            small_bytes: 100,
            row_group_rows: 10,
        };
        let firsts = |rs: Vec<Vec<Ranged>>| -> Vec<Vec<u64>> {
            rs.iter()
                .map(|r| r.iter().map(|f| f.first).collect())
                .collect()
        };
        // A large file splits the runs; the second run is too short.
        let files: Vec<_> = [(1, 10), (2, 10), (3, 10), (4, 500), (5, 10), (6, 10)]
            .map(|(a, b)| ranged(a, b))
            .into();
        assert_eq!(firsts(runs(&files, 100, &o)), vec![vec![1, 2, 3]]);
        // Files at or above the bound are not merged.
        assert_eq!(firsts(runs(&files, 3, &o)), Vec::<Vec<u64>>::new());
        // A front file larger than the rest together waits for more.
        let files: Vec<_> = [(1, 90), (2, 10), (3, 10), (4, 10)]
            .map(|(a, b)| ranged(a, b))
            .into();
        assert_eq!(firsts(runs(&files, 100, &o)), vec![vec![2, 3, 4]]);
        let files: Vec<_> = [(1, 30), (2, 10), (3, 10), (4, 10)]
            .map(|(a, b)| ranged(a, b))
            .into();
        assert_eq!(firsts(runs(&files, 100, &o)), vec![vec![1, 2, 3, 4]]);
    }

    #[test]
    fn a_prepared_merge_is_invisible_until_published() {
        let (_d, layout) = layout();
        let expected = compact_each(&layout, 1..=12);
        let before = list_parquet_files(&layout.parquet).unwrap();
        let (pending, _) = prepare_small_files(&layout, 13, &opts(4)).unwrap();
        assert!(!pending.is_empty());
        // Written, hidden: a reader sees exactly the files of before, each
        // row once, and no merge half done.
        assert!(pending.iter().all(|p| p.tmp.exists() && !p.path.exists()));
        assert_eq!(list_parquet_files(&layout.parquet).unwrap(), before);
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected.clone()));
        let r = publish(pending).unwrap();
        assert!(r.parquet_written > 0 && r.parquet_merged >= 4, "{r:?}");
        let after = list_parquet_files(&layout.parquet).unwrap();
        assert!(
            after.len() < before.len(),
            "{} -> {}",
            before.len(),
            after.len()
        );
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected.clone()));
        assert!(overlapping_files(&layout.parquet).unwrap().is_empty());
        // No temporary file is left behind.
        let rec = crate::compact::recover(&layout).unwrap();
        assert_eq!(rec.temp_files_removed, 0);
    }

    #[test]
    fn a_merge_whose_input_went_away_is_discarded_and_discarding_keeps_the_inputs() {
        let (_d, layout) = layout();
        compact_each(&layout, 1..=8);
        let (pending, _) = prepare_small_files(&layout, 9, &opts(4)).unwrap();
        let n = pending.len();
        assert!(n > 0);
        // One input removed by someone else: its merge is not published
        // (its rows would come back), the others are.
        let victim = pending[0].inputs[0].clone();
        fs::remove_file(&victim).unwrap();
        let tmp = pending[0].tmp.clone();
        let r = publish(pending).unwrap();
        assert_eq!(r.parquet_written, n as u64 - 1);
        assert!(!tmp.exists());
        assert!(!list_parquet_files(&layout.parquet)
            .unwrap()
            .iter()
            .any(|f| f.file_name() == tmp.file_name()));
        // Discarded merges leave their inputs and no temporary file.
        let (_d, layout) = self::layout();
        compact_each(&layout, 1..=8);
        let inputs = list_parquet_files(&layout.parquet).unwrap();
        let (pending, _) = prepare_small_files(&layout, 9, &opts(4)).unwrap();
        let tmps: Vec<PathBuf> = pending.iter().map(|p| p.tmp.clone()).collect();
        discard(pending);
        assert!(tmps.iter().all(|t| !t.exists()));
        assert_eq!(list_parquet_files(&layout.parquet).unwrap(), inputs);
    }

    #[test]
    fn merging_keeps_every_row_once_and_bounds_the_file_count() {
        let (_d, layout) = layout();
        let mut expected = compact_each(&layout, 1..=40);
        let (files_before, keys_before) = count(&layout);
        assert_eq!(keys_before, 40);
        let r = merge_small_files(&layout, 41, &opts(4)).unwrap();
        assert!(r.parquet_merged > 0 && r.keys_merged == 40, "{r:?}");
        let (files_after, keys_after) = count(&layout);
        assert!(
            files_after * 4 <= files_before,
            "{files_before} -> {files_after}"
        );
        assert_eq!(keys_after, 1);
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected.clone()));
        assert!(overlapping_files(&layout.parquet).unwrap().is_empty());
        // Every merged file is sorted by time, like a compaction's.
        for f in list_parquet_files(&layout.parquet).unwrap() {
            let (_, batches) = read_file(&f).unwrap();
            for b in batches {
                let ts = b
                    .column_by_name("ts")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap();
                assert!(ts.values().windows(2).all(|w| w[0] <= w[1]));
            }
        }
        // The merged key file still commits every range: recovery keeps
        // the files and the keys load.
        let rec = crate::compact::recover(&layout).unwrap();
        assert_eq!(rec.uncommitted_files_removed, 0);
        assert_eq!(rec.max_id, 40);
        let keys = read_key_file(&keys_path(&layout.dedup, 1, 40)).unwrap();
        assert_eq!(keys.len(), 400);
        // Further compactions and merges go on from there.
        expected.extend(compact_each(&layout, 41..=48));
        merge_small_files(&layout, 49, &opts(4)).unwrap();
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected));
        assert!(list_segments(&layout.log).unwrap().is_empty());
    }

    #[test]
    fn a_merge_cut_short_by_a_crash_is_finished_by_recovery() {
        let (_d, layout) = layout();
        let mut expected = Vec::new();
        for id in 1..=6u64 {
            compact_one(&layout, id, id * 100, 50);
            expected.extend((id * 100..id * 100 + 50).map(sample_event));
        }
        // Keep copies of the inputs, merge, then put them back as if the
        // crash came between the merged file's rename and their deletion.
        let inputs: Vec<(PathBuf, Vec<u8>)> = list_parquet_files(&layout.parquet)
            .unwrap()
            .into_iter()
            .chain((1..=6).map(|i| keys_path(&layout.dedup, i, i)))
            .map(|p| {
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        merge_small_files(&layout, 7, &opts(2)).unwrap();
        let merged = count(&layout);
        for (p, b) in &inputs {
            fs::write(p, b).unwrap();
        }
        assert!(!overlapping_files(&layout.parquet).unwrap().is_empty());
        let rec = recover(&layout).unwrap();
        assert_eq!(rec.inputs_removed, inputs.len() as u64);
        assert_eq!(count(&layout), merged);
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected.clone()));
        // A crash before the rename leaves a temporary file beside the
        // inputs; the store's recovery removes it and keeps the inputs.
        let some_dir = list_parquet_files(&layout.parquet).unwrap()[0]
            .parent()
            .unwrap()
            .to_path_buf();
        fs::write(
            some_dir.join(".seg-00000000000000000001-00000000000000000009.parquet.tmp"),
            b"partial",
        )
        .unwrap();
        let rec = crate::compact::recover(&layout).unwrap();
        assert_eq!(rec.temp_files_removed, 1);
        assert_eq!(
            (rec.uncommitted_files_removed, rec.merge_inputs_removed),
            (0, 0)
        );
        assert_eq!(count(&layout), merged);
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected));
    }

    #[test]
    fn stream_files_merge_apart_from_segment_files() {
        let (_d, layout) = layout();
        let mut expected: Vec<Record> = Vec::new();
        // Segment files 1..=4 and JetStream batches 1..=12 (sequences
        // k*10 .. k*10+9) in the same directories.
        for id in 1..=4u64 {
            compact_one(&layout, id, id * 1000, 5);
            expected.extend((id * 1000..id * 1000 + 5).map(sample_event));
        }
        for k in 1..=12u64 {
            let records: Vec<Record> = (k * 100..k * 100 + 5).map(sample_event).collect();
            let opts = crate::parquet::WriteOptions {
                partitions: 4,
                ..crate::parquet::WriteOptions::new(Ranges::Stream.stem(k * 10, k * 10 + 9))
            };
            crate::parquet::write_records(&layout.parquet, &records, &opts).unwrap();
            expected.extend(records);
        }
        let named = |prefix: &str| {
            list_parquet_files(&layout.parquet)
                .unwrap()
                .iter()
                .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
                .count()
        };
        let (seg_before, nats_before) = (named("seg-"), named("nats-"));
        // Only batches acknowledged below sequence 100 (k ≤ 9) may merge.
        let r = merge_small_parquet(&layout.parquet, Ranges::Stream, 100, &opts(2)).unwrap();
        assert!(r.parquet_merged > 0, "{r:?}");
        assert_eq!(
            named("seg-"),
            seg_before,
            "segment files are another naming"
        );
        assert!(named("nats-") < nats_before);
        for f in list_parquet_files(&layout.parquet).unwrap() {
            if let Some((first, last)) = parquet_range(&f, Ranges::Stream) {
                assert!(
                    last < 100 || first >= 100,
                    "{first}-{last} straddles the bound"
                );
            }
        }
        assert_eq!(sorted(read_back(&layout.parquet)), sorted(expected.clone()));
        // An interrupted stream merge is finished by its own recovery.
        assert!(overlapping_files(&layout.parquet).unwrap().is_empty());
        assert_eq!(recover_parquet(&layout.parquet, Ranges::Stream).unwrap(), 0);
    }

    #[test]
    fn nothing_at_or_above_the_oldest_uncompacted_segment_is_merged() {
        let (_d, layout) = layout();
        for id in 1..=6u64 {
            compact_one(&layout, id, id * 10, 10);
        }
        let before = count(&layout);
        let r = merge_small_files(&layout, 1, &opts(2)).unwrap();
        assert_eq!(r, MergeReport::default());
        assert_eq!(count(&layout), before);
    }
}
