//! What [`LocalStore::open`](super::LocalStore::open) does before the first
//! append: brings the data directory back to a state the writer and the
//! compactor can start from, and reports what it found ([`OpenReport`]).
//!
//! In order:
//!
//! 1. Interrupted compactions are finished or undone ([`compact::recover`])
//!    before anything is replayed, so every record is in exactly one place:
//!    a segment or a committed Parquet file.
//! 2. Deduplication key files of compacted ranges are loaded for the days
//!    inside the window; files wholly past it are removed, except the newest,
//!    which records the highest segment id ever used.
//! 3. Every un-compacted segment is scanned and its keys loaded. Damage at
//!    the end of the newest segment is a torn tail, the expected result of a
//!    crash mid-append: nothing in it was acknowledged (a group is answered
//!    only after its `fdatasync`), so it is cut off. Damage inside a sealed
//!    segment is not a crash artefact; the file is kept for inspection and
//!    its valid prefix read.
//! 4. A fresh active segment is created with an id above every id any
//!    segment, key file or Parquet file name refers to, so segment ids are
//!    never reused and a name identifies its contents for ever.

use std::time::SystemTime;

use super::{OpenReport, SegInfo, Segments, StoreOptions};
use crate::compact::{self, Layout};
use crate::dedup::{self, Index};
use crate::error::{Result, StoreError};
use crate::log::{self, ActiveSegment, HEADER_LEN};
use crate::record::utc_day;

/// The deduplication index, the segment table, the report and the new
/// active segment.
pub(super) type Recovered = (Index, Segments, OpenReport, ActiveSegment);

pub(super) fn recover(layout: &Layout, opts: &StoreOptions) -> Result<Recovered> {
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
