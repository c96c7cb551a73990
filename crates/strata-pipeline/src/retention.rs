//! Hot retention of the Parquet store.
//!
//! * Events are kept `events_max_age` (default 90 days) after their UTC
//!   day: whole `kind=events/date=…` directories are dropped once the day
//!   has ended that long ago.
//! * Exposures are kept until `exposures_after_end` (default 90 days) after
//!   the end of their experiment, never less than that after their own
//!   `ts` (late exposures count as long as the others). The caller supplies
//!   the end times (`strata serve` knows them); an experiment without one —
//!   still running, or unknown — falls back to `exposures_fallback_age`
//!   after `ts` (default 365 days). A date directory mixes experiments, so
//!   its files are rewritten without the expired rows, or deleted when
//!   nothing is left.
//! * Aliases are kept `aliases_max_age` (default 365 days, as long as the
//!   exposures of a running experiment) after their UTC day: an alias is
//!   needed as long as records of its ids may be analysed, and whole
//!   `kind=aliases/date=…` directories are dropped after that.
//!
//! Un-compacted log data is younger than a compaction interval and is not
//! considered.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use arrow_array::BooleanArray;

use crate::error::{Result, StoreError};
use crate::log::sync_dir;
use crate::parquet::{list_parquet_files, parse_date, rewrite_filtered, string_column, ts_column};
use crate::record::MICROS_PER_DAY;

const DAY: Duration = Duration::from_secs(86_400);

/// How long Parquet data is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Age of an event's UTC day after which it is dropped.
    pub events_max_age: Duration,
    /// How long exposures are kept after their experiment's end.
    pub exposures_after_end: Duration,
    /// End time (µs since the epoch) of ended experiments, by key.
    pub experiment_ends: HashMap<String, i64>,
    /// Age after which exposures of experiments without an end are dropped.
    pub exposures_fallback_age: Duration,
    /// Age of an alias's UTC day after which it is dropped.
    pub aliases_max_age: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            events_max_age: 90 * DAY,
            exposures_after_end: 90 * DAY,
            experiment_ends: HashMap::new(),
            exposures_fallback_age: 365 * DAY,
            aliases_max_age: 365 * DAY,
        }
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionReport {
    /// `kind=events/date=…` directories removed.
    pub event_dates_removed: u64,
    /// Exposure rows removed.
    pub exposure_rows_removed: u64,
    /// Exposure files rewritten without expired rows.
    pub exposure_files_rewritten: u64,
    /// Exposure files deleted (every row expired).
    pub exposure_files_deleted: u64,
    /// `kind=aliases/date=…` directories removed.
    pub alias_dates_removed: u64,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn date_dirs(kind_dir: &Path) -> Result<Vec<(i64, std::path::PathBuf)>> {
    let mut out = Vec::new();
    if !kind_dir.is_dir() {
        return Ok(out);
    }
    let entries =
        fs::read_dir(kind_dir).map_err(|e| StoreError::io("list directory", kind_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list directory", kind_dir, e))?;
        let name = entry.file_name();
        if let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_prefix("date="))
            .and_then(parse_date)
        {
            out.push((day, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Applies `policy` at time `now_micros` to the Parquet tree under
/// `parquet_root`. Blocking; the caller holds the compaction lock.
pub fn apply(
    parquet_root: &Path,
    now_micros: i64,
    policy: &RetentionPolicy,
    row_group_rows: usize,
) -> Result<RetentionReport> {
    let mut report = RetentionReport {
        event_dates_removed: drop_days(
            &parquet_root.join("kind=events"),
            now_micros.saturating_sub(micros(policy.events_max_age)),
        )?,
        alias_dates_removed: drop_days(
            &parquet_root.join("kind=aliases"),
            now_micros.saturating_sub(micros(policy.aliases_max_age)),
        )?,
        ..RetentionReport::default()
    };

    let exposures = parquet_root.join("kind=exposures");
    let after_end = micros(policy.exposures_after_end);
    let fallback = micros(policy.exposures_fallback_age);
    let min_age = after_end.min(fallback);
    for (day, dir) in date_dirs(&exposures)? {
        // No row of a day younger than the shortest keep time can expire.
        if day.saturating_mul(MICROS_PER_DAY).saturating_add(min_age) > now_micros {
            continue;
        }
        for file in list_parquet_files(&dir)? {
            let keep = |b: &arrow_array::RecordBatch| -> Result<BooleanArray> {
                let exps = string_column(b, "experiment", &file)?;
                let ts = ts_column(b, "ts", &file)?;
                Ok(exps
                    .iter()
                    .zip(ts.iter())
                    .map(|(e, t)| {
                        let t = t.unwrap_or(i64::MAX);
                        let expires = match e.and_then(|e| policy.experiment_ends.get(e)) {
                            Some(&end) => t.max(end).saturating_add(after_end),
                            None => t.saturating_add(fallback),
                        };
                        Some(now_micros < expires)
                    })
                    .collect())
            };
            let r = rewrite_filtered(&file, row_group_rows, &keep)?;
            if r.removed > 0 {
                report.exposure_rows_removed += r.removed;
                if r.kept == 0 {
                    report.exposure_files_deleted += 1;
                } else {
                    report.exposure_files_rewritten += 1;
                }
            }
        }
        remove_empty_dirs(&dir)?;
    }
    Ok(report)
}

/// Removes the date directories under `kind_dir` whose UTC day ended at or
/// before `cutoff` (µs since the epoch); returns how many.
fn drop_days(kind_dir: &Path, cutoff: i64) -> Result<u64> {
    let mut removed = 0;
    for (day, dir) in date_dirs(kind_dir)? {
        if (day + 1).saturating_mul(MICROS_PER_DAY) <= cutoff {
            fs::remove_dir_all(&dir).map_err(|e| StoreError::io("remove partition", &dir, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(kind_dir)?;
    }
    Ok(removed)
}

/// Removes `dir`'s empty sub-directories, then `dir` itself if empty.
fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list directory", dir, e))?;
        let p = entry.path();
        if !(p.is_dir() && remove_empty_dirs(&p)?) {
            empty = false;
        }
    }
    if empty {
        fs::remove_dir(dir).map_err(|e| StoreError::io("remove empty directory", dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(empty)
}
