//! Right to deletion: removing every stored record of one unit.
//!
//! The store first compacts everything durable (so the unit's log records
//! reach Parquet and their segments are deleted), then rewrites the Parquet
//! files of the unit's partition, in every kind and date, without its rows
//! ([`crate::parquet::rewrite_filtered`]: atomic replacement, or deletion of
//! a file left empty). Only `part=<user_partition(unit)>` directories can
//! hold the unit, so the cost is one partition's files, not the data set.
//! Records of the unit that arrive after the call started are not covered.

use std::path::Path;

use arrow_array::BooleanArray;

use crate::error::Result;
use crate::parquet::{list_parquet_files, rewrite_filtered, string_column};
use crate::partition::user_partition;

/// What a deletion removed, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeletionReport {
    /// The unit.
    pub unit_id: String,
    /// Records of the unit that were still in the log and were compacted
    /// before the rewrite (included in the row counts below).
    pub log_records_compacted: u64,
    /// Exposure rows removed.
    pub exposures_removed: u64,
    /// Event rows removed.
    pub events_removed: u64,
    /// Parquet files rewritten without the unit's rows.
    pub files_rewritten: u64,
    /// Parquet files deleted because only the unit's rows were in them.
    pub files_deleted: u64,
}

/// Removes `unit_id`'s rows from the Parquet tree under `parquet_root`.
/// Blocking; the caller holds the compaction lock.
pub fn delete_unit_parquet(
    parquet_root: &Path,
    unit_id: &str,
    partitions: u32,
    row_group_rows: usize,
) -> Result<DeletionReport> {
    let mut report = DeletionReport {
        unit_id: unit_id.to_string(),
        ..Default::default()
    };
    let part = user_partition(unit_id, partitions.max(1));
    let width = partitions
        .max(1)
        .saturating_sub(1)
        .max(1)
        .to_string()
        .len()
        .max(2);
    let part_dir = format!("part={part:0width$}");
    for kind in ["exposures", "events"] {
        let kind_dir = parquet_root.join(format!("kind={kind}"));
        for file in list_parquet_files(&kind_dir)? {
            let in_partition = file
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n.to_string_lossy() == part_dir);
            if !in_partition {
                continue;
            }
            let keep = |b: &arrow_array::RecordBatch| -> Result<BooleanArray> {
                let units = string_column(b, "unit_id", &file)?;
                Ok(units.iter().map(|u| Some(u != Some(unit_id))).collect())
            };
            let r = rewrite_filtered(&file, row_group_rows, &keep)?;
            if r.removed > 0 {
                if kind == "exposures" {
                    report.exposures_removed += r.removed;
                } else {
                    report.events_removed += r.removed;
                }
                if r.kept == 0 {
                    report.files_deleted += 1;
                } else {
                    report.files_rewritten += 1;
                }
            }
        }
    }
    Ok(report)
}
