//! Right to deletion: removing every stored record of one unit.
//!
//! The store first compacts everything durable (so the unit's log records
//! reach Parquet and their segments are deleted), then rewrites the Parquet
//! files of the unit's partition, in every kind and date, without its rows
//! ([`crate::parquet::rewrite_filtered`]: atomic replacement, or deletion of
//! a file left empty). Only `part=<user_partition(unit)>` directories can
//! hold the unit, so the cost is one partition's files, not the data set.
//! Records of the unit that arrive after the call started are not covered.
//!
//! Aliases make one person several ids. Deleting a user id also deletes
//! the records of every anonymous id aliased to it (the person's devices,
//! which the analysis counts as the same unit), and every alias naming any
//! deleted id. Deleting an anonymous id does not reach the user id it
//! became: a request about one device must not erase an account. A device
//! shared by two users goes with either user's deletion. Alias files are
//! partitioned by the anonymous id, so finding the aliases of a user id
//! reads every alias file — a small table, one row per sign-in.

use std::collections::BTreeSet;
use std::path::Path;

use arrow_array::{BooleanArray, RecordBatch};

use crate::error::Result;
use crate::parquet::{list_parquet_files, read_file, rewrite_filtered, string_column};
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
    /// Alias rows removed (those naming any deleted id).
    pub aliases_removed: u64,
    /// The anonymous ids aliased to the unit, whose records were deleted
    /// with it (included in the row counts), in ascending order.
    pub linked_ids: Vec<String>,
    /// Parquet files rewritten without the unit's rows.
    pub files_rewritten: u64,
    /// Parquet files deleted because only the unit's rows were in them.
    pub files_deleted: u64,
}

/// Removes `unit_id`'s rows, and those of the anonymous ids aliased to it,
/// from the Parquet tree under `parquet_root`. Blocking; the caller holds
/// the compaction lock.
pub fn delete_unit_parquet(
    parquet_root: &Path,
    unit_id: &str,
    partitions: u32,
    row_group_rows: usize,
) -> Result<DeletionReport> {
    let alias_dir = parquet_root.join("kind=aliases");
    let alias_files = list_parquet_files(&alias_dir)?;
    let mut linked = BTreeSet::new();
    for file in &alias_files {
        let (_, batches) = read_file(file)?;
        for b in &batches {
            let anonymous = string_column(b, "anonymous_id", file)?;
            let users = string_column(b, "user_id", file)?;
            for (a, u) in anonymous.iter().zip(users.iter()) {
                if let (Some(a), Some(unit)) = (a, u) {
                    if unit == unit_id && a != unit_id {
                        linked.insert(a.to_string());
                    }
                }
            }
        }
    }
    let mut report = DeletionReport {
        unit_id: unit_id.to_string(),
        linked_ids: linked.iter().cloned().collect(),
        ..Default::default()
    };
    let mut ids: BTreeSet<&str> = linked.iter().map(String::as_str).collect();
    ids.insert(unit_id);
    let parts: BTreeSet<String> = ids
        .iter()
        .map(|id| part_dir_name(user_partition(id, partitions.max(1)), partitions))
        .collect();
    let in_parts = |file: &Path| {
        file.parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| parts.contains(n.to_string_lossy().as_ref()))
    };
    for kind in ["exposures", "events"] {
        let kind_dir = parquet_root.join(format!("kind={kind}"));
        for file in list_parquet_files(&kind_dir)? {
            if !in_parts(&file) {
                continue;
            }
            let keep = |b: &RecordBatch| -> Result<BooleanArray> {
                let units = string_column(b, "unit_id", &file)?;
                Ok(units
                    .iter()
                    .map(|u| Some(!u.is_some_and(|u| ids.contains(u))))
                    .collect())
            };
            let r = rewrite_filtered(&file, row_group_rows, &keep)?;
            if kind == "exposures" {
                report.exposures_removed += r.removed;
            } else {
                report.events_removed += r.removed;
            }
            report.count_file(r.removed, r.kept);
        }
    }
    for file in &alias_files {
        let keep = |b: &RecordBatch| -> Result<BooleanArray> {
            let anonymous = string_column(b, "anonymous_id", file)?;
            let users = string_column(b, "user_id", file)?;
            Ok(anonymous
                .iter()
                .zip(users.iter())
                .map(|(a, u)| {
                    let named = |id: Option<&str>| id.is_some_and(|id| ids.contains(id));
                    Some(!(named(a) || named(u)))
                })
                .collect())
        };
        let r = rewrite_filtered(file, row_group_rows, &keep)?;
        report.aliases_removed += r.removed;
        report.count_file(r.removed, r.kept);
    }
    Ok(report)
}

impl DeletionReport {
    /// Counts a file that lost `removed` rows and kept `kept`.
    fn count_file(&mut self, removed: u64, kept: u64) {
        if removed == 0 {
            return;
        }
        if kept == 0 {
            self.files_deleted += 1;
        } else {
            self.files_rewritten += 1;
        }
    }
}

/// The directory name of user partition `part` among `partitions`, as
/// [`crate::parquet::partition_dir`] writes it.
fn part_dir_name(part: u32, partitions: u32) -> String {
    let width = partitions
        .max(1)
        .saturating_sub(1)
        .max(1)
        .to_string()
        .len()
        .max(2);
    format!("part={part:0width$}")
}
