//! The Parquet layout the analysis engine reads.
//!
//! ```text
//! <root>/kind=exposures/date=YYYY-MM-DD/part=NN/<stem>.parquet
//! <root>/kind=events/date=YYYY-MM-DD/part=NN/<stem>.parquet
//! <root>/kind=aliases/date=YYYY-MM-DD/part=NN/<stem>.parquet
//! ```
//!
//! `date` is the UTC day of the record's `ts`, `part` its unit's (an
//! alias's anonymous id's) [`user_partition`] (two digits, or more when there are over 100
//! partitions). Hive-style directories let DataFusion prune by kind, date and
//! partition without opening files; within a file rows are sorted by `ts`
//! (then unit) and every column has row-group and page statistics, so time
//! windows prune row groups too. Columns follow `docs/data-model.md`: `ts`
//! and `received_at` are `Timestamp(µs, "UTC")`, `attributes` and
//! `properties` are `map<string, string>`.
//!
//! Every file is written atomically: a hidden temporary file in the target
//! directory (the analysis skips hidden files), fsync, rename, fsync of the
//! directory. A file's stem names its source (the compacted log segment
//! range, or the JetStream sequence range), so writing the same source again
//! replaces the file instead of adding a copy.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::properties::{EnabledStatistics, WriterProperties};
use ::parquet::schema::types::ColumnPath;
use arrow_array::builder::{BinaryBuilder, MapBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, MapArray, RecordBatch, RecordBatchReader,
    StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{NaiveDate, TimeDelta};

use crate::error::{Result, StoreError};
use crate::log::sync_dir;
use crate::partition::user_partition;
use crate::record::{utc_day, Kind, MapRef, Record, RecordRef};

/// Rows per row group by default: small enough that a time-window query
/// skips most of a large file, large enough to compress well.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// How [`write_records`] names and partitions its files.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Number of user partitions (`part=00` … `part=partitions-1`).
    pub partitions: u32,
    /// File name without extension, the same in every partition directory;
    /// it must identify the source so that a redo overwrites (e.g.
    /// `seg-<first>-<last>`). Must not start with `.` or `_`.
    pub file_stem: String,
    /// Maximum rows per row group.
    pub row_group_rows: usize,
}

impl WriteOptions {
    /// Options with the default partitioning and row groups.
    pub fn new(file_stem: impl Into<String>) -> Self {
        WriteOptions {
            partitions: crate::partition::DEFAULT_PARTITIONS,
            file_stem: file_stem.into(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// `YYYY-MM-DD` of a UTC day number (days since 1970-01-01).
///
/// Days beyond the calendar's range (some 262,000 years from now; stored
/// timestamps lie within days of the present) are clamped to its ends.
pub fn date_string(day: i64) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN);
    let date = epoch
        .checked_add_signed(TimeDelta::try_days(day).unwrap_or(TimeDelta::MAX))
        .unwrap_or(if day < 0 {
            NaiveDate::MIN
        } else {
            NaiveDate::MAX
        });
    date.format("%Y-%m-%d").to_string()
}

/// The UTC day number of a `YYYY-MM-DD` string (a real calendar date).
pub fn parse_date(s: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some(date.signed_duration_since(epoch).num_days())
}

/// The directory of one partition.
pub fn partition_dir(root: &Path, kind: Kind, day: i64, part: u32, partitions: u32) -> PathBuf {
    let width = partitions.saturating_sub(1).max(1).to_string().len().max(2);
    root.join(format!("kind={}", kind.dir_name()))
        .join(format!("date={}", date_string(day)))
        .join(format!("part={part:0width$}"))
}

fn map_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of the exposure files.
pub fn exposure_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_id", DataType::Utf8, false),
        Field::new("experiment", DataType::Utf8, false),
        Field::new("variant", DataType::Utf8, false),
        Field::new("assigned_variant", DataType::Utf8, false),
        Field::new("opted_out", DataType::Boolean, false),
        Field::new("ts", ts_type(), false),
        Field::new("received_at", ts_type(), false),
        Field::new("attributes", map_type(), false),
        // Nullable, unlike the others: files written before it was added
        // lack it, and a reader merging both kinds of files fills it with
        // nulls there (read as false).
        Field::new("is_bot", DataType::Boolean, true),
    ]))
}

/// Arrow schema of the event files.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("unit_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("ts", ts_type(), false),
        Field::new("received_at", ts_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("properties", map_type(), false),
        Field::new("is_bot", DataType::Boolean, false),
        // Nullable for the reason `is_bot` of exposures is.
        Field::new("opted_out", DataType::Boolean, true),
    ]))
}

/// Arrow schema of the alias files.
pub fn alias_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("anonymous_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", ts_type(), false),
        Field::new("received_at", ts_type(), false),
    ]))
}

/// The Arrow schema of the files of `kind`.
pub fn schema_of(kind: Kind) -> SchemaRef {
    match kind {
        Kind::Exposure => exposure_schema(),
        Kind::Event => event_schema(),
        Kind::Alias => alias_schema(),
    }
}

/// The `map<string, string>` column of `maps`. Keys and values are
/// gathered as bytes and checked to be UTF-8 once per column, which costs
/// far less than once per string.
fn map_array<'a>(maps: impl Iterator<Item = MapRef<'a>>, path: &Path) -> Result<ArrayRef> {
    let (entries_field, sorted, fields) = match map_type() {
        DataType::Map(f, sorted) => match f.data_type().clone() {
            DataType::Struct(fields) => (f, sorted, fields),
            other => {
                return Err(StoreError::parquet(
                    path,
                    format!("map entries are {other}"),
                ))
            }
        },
        other => return Err(StoreError::parquet(path, format!("map type is {other}"))),
    };
    let mut keys = BinaryBuilder::new();
    let mut values = BinaryBuilder::new();
    let mut offsets = vec![0i32];
    let mut entries = 0usize;
    for m in maps {
        for (k, v) in m.iter_bytes() {
            keys.append_value(k);
            values.append_value(v);
            entries += 1;
        }
        offsets.push(i32::try_from(entries).map_err(|e| StoreError::parquet(path, e))?);
    }
    let utf8 = |b: &mut BinaryBuilder| -> Result<ArrayRef> {
        Ok(Arc::new(
            StringArray::try_from_binary(b.finish()).map_err(|e| StoreError::parquet(path, e))?,
        ))
    };
    let entries = StructArray::try_new(fields, vec![utf8(&mut keys)?, utf8(&mut values)?], None)
        .map_err(|e| StoreError::parquet(path, e))?;
    let map = MapArray::try_new(
        entries_field,
        OffsetBuffer::new(offsets.into()),
        entries,
        None,
        sorted,
    )
    .map_err(|e| StoreError::parquet(path, e))?;
    Ok(Arc::new(map))
}

fn ts_array(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The Arrow batch of the records of `kind` among `records` (others are
/// skipped).
pub fn to_batch(kind: Kind, records: &[&RecordRef<'_>], path: &Path) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = match kind {
        Kind::Exposure => {
            let xs: Vec<_> = records
                .iter()
                .filter_map(|r| match r {
                    RecordRef::Exposure(x) => Some(x),
                    _ => None,
                })
                .collect();
            vec![
                strings(xs.iter().map(|x| x.unit_id)),
                strings(xs.iter().map(|x| x.experiment)),
                strings(xs.iter().map(|x| x.variant)),
                strings(xs.iter().map(|x| x.assigned_variant)),
                Arc::new(BooleanArray::from(
                    xs.iter().map(|x| x.opted_out).collect::<Vec<_>>(),
                )),
                ts_array(xs.iter().map(|x| x.ts).collect()),
                ts_array(xs.iter().map(|x| x.received_at).collect()),
                map_array(xs.iter().map(|x| x.attributes), path)?,
                Arc::new(BooleanArray::from(
                    xs.iter().map(|x| x.is_bot).collect::<Vec<_>>(),
                )),
            ]
        }
        Kind::Event => {
            let es: Vec<_> = records
                .iter()
                .filter_map(|r| match r {
                    RecordRef::Event(e) => Some(e),
                    _ => None,
                })
                .collect();
            vec![
                strings(es.iter().map(|e| e.event_id)),
                strings(es.iter().map(|e| e.unit_id)),
                strings(es.iter().map(|e| e.event_type)),
                ts_array(es.iter().map(|e| e.ts).collect()),
                ts_array(es.iter().map(|e| e.received_at).collect()),
                Arc::new(Float64Array::from(
                    es.iter().map(|e| e.value).collect::<Vec<_>>(),
                )),
                map_array(es.iter().map(|e| e.properties), path)?,
                Arc::new(BooleanArray::from(
                    es.iter().map(|e| e.is_bot).collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    es.iter().map(|e| e.opted_out).collect::<Vec<_>>(),
                )),
            ]
        }
        Kind::Alias => {
            let als: Vec<_> = records
                .iter()
                .filter_map(|r| match r {
                    RecordRef::Alias(a) => Some(a),
                    _ => None,
                })
                .collect();
            vec![
                strings(als.iter().map(|a| a.anonymous_id)),
                strings(als.iter().map(|a| a.user_id)),
                ts_array(als.iter().map(|a| a.ts).collect()),
                ts_array(als.iter().map(|a| a.received_at).collect()),
            ]
        }
    };
    RecordBatch::try_new(schema_of(kind), cols).map_err(|e| StoreError::parquet(path, e))
}

fn writer_properties(row_group_rows: usize) -> WriterProperties {
    let mut b = WriterProperties::builder();
    // Columns that are (nearly) unique per row: a dictionary costs
    // compaction CPU to build and makes the file larger, not smaller.
    for column in ["event_id", "ts", "received_at"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    b.set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by("strata-pipeline".into())
        .build()
}

/// Creates `dir` and its missing ancestors below `root`, making each new
/// entry durable.
fn create_dirs(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let mut d = dir;
    while let Some(parent) = d.parent() {
        sync_dir(parent)?;
        if parent == root || !parent.starts_with(root) {
            break;
        }
        d = parent;
    }
    Ok(())
}

/// A Parquet file of one kind of record written in pieces, with the
/// pipeline's schema and writer settings, that appears at its path only when
/// finished: rows go to a hidden temporary file, which [`FileWriter::finish`]
/// fsyncs and renames (then fsyncs the directory). Dropped unfinished, it
/// leaves the temporary file and nothing at the path.
pub struct FileWriter {
    kind: Kind,
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
}

impl FileWriter {
    /// Starts the file of `kind` records at `path` (its directory must
    /// exist), `row_group_rows` rows per row group.
    pub fn create(path: &Path, kind: Kind, row_group_rows: usize) -> Result<Self> {
        Self::with_schema(path, kind, schema_of(kind), row_group_rows)
    }

    fn with_schema(
        path: &Path,
        kind: Kind,
        schema: SchemaRef,
        row_group_rows: usize,
    ) -> Result<Self> {
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::parquet(path, "no parent directory"))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::parquet(path, "no file name"))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let file =
            File::create(&tmp).map_err(|e| StoreError::io("create parquet file", &tmp, e))?;
        let writer = ArrowWriter::try_new(file, schema, Some(writer_properties(row_group_rows)))
            .map_err(|e| StoreError::parquet(&tmp, e))?;
        Ok(FileWriter {
            kind,
            path: path.to_path_buf(),
            tmp,
            writer,
        })
    }

    /// Appends the records of this file's kind among `records`.
    pub fn write_records(&mut self, records: &[&RecordRef<'_>]) -> Result<()> {
        let batch = to_batch(self.kind, records, &self.path)?;
        self.write_batch(&batch)
    }

    /// Appends a batch of this file's schema.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| StoreError::parquet(&self.tmp, e))
    }

    /// Closes the file and puts it at its path durably.
    pub fn finish(self) -> Result<()> {
        let (tmp, path) = self.finish_hidden()?;
        publish_file(&tmp, &path)
    }

    /// Closes the file durably under its hidden temporary name, which it
    /// returns with the path [`publish_file`] puts it at: readers do not
    /// see it until then.
    fn finish_hidden(self) -> Result<(PathBuf, PathBuf)> {
        let FileWriter {
            path, tmp, writer, ..
        } = self;
        let file = writer
            .into_inner()
            .map_err(|e| StoreError::parquet(&tmp, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync parquet file", &tmp, e))?;
        Ok((tmp, path))
    }
}

/// Puts the file written durably at `tmp` at `path` (rename, then fsync
/// of the directory).
pub(crate) fn publish_file(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).map_err(|e| StoreError::io("rename parquet file", path, e))?;
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::parquet(path, "no parent directory"))?;
    sync_dir(dir)
}

/// Writes `batches` to `path` atomically (hidden temporary file, fsync,
/// rename, fsync of the directory).
pub fn write_file_atomic(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<()> {
    let tmp = write_file_hidden(path, schema, batches, row_group_rows)?;
    publish_file(&tmp, path)
}

/// Writes `batches` durably to the hidden temporary file of `path`, which
/// it returns; [`publish_file`] puts it at `path`.
pub(crate) fn write_file_hidden(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<PathBuf> {
    // The kind only matters to `write_records`, which is not used here.
    let mut w = FileWriter::with_schema(path, Kind::Event, schema, row_group_rows)?;
    for b in batches {
        w.write_batch(b)?;
    }
    Ok(w.finish_hidden()?.0)
}

/// Writes `records` as Parquet under `root` in the layout above: one file
/// named `<file_stem>.parquet` per (kind, date, partition) present, rows
/// sorted by `ts` then unit. Returns the files written. Existing files of
/// the same name are replaced atomically, so a redo after a crash does not
/// duplicate rows. This is the writer of the local compactor and of the
/// JetStream consumer.
pub fn write_records(root: &Path, records: &[Record], opts: &WriteOptions) -> Result<Vec<PathBuf>> {
    let refs: Vec<RecordRef<'_>> = records.iter().map(Record::view).collect();
    write_record_refs(root, &refs, opts)
}

/// [`write_records`] of borrowed records (the local compactor's, straight
/// from the log's bytes).
pub fn write_record_refs<'r, 'a: 'r>(
    root: &Path,
    records: impl IntoIterator<Item = &'r RecordRef<'a>>,
    opts: &WriteOptions,
) -> Result<Vec<PathBuf>> {
    if opts.file_stem.is_empty()
        || opts.file_stem.starts_with(['.', '_'])
        || opts.file_stem.contains('/')
    {
        return Err(StoreError::Option {
            option: "file_stem",
            reason: format!("`{}` must be a plain, visible file name", opts.file_stem),
        });
    }
    let partitions = opts.partitions.max(1);
    let mut groups: BTreeMap<(Kind, i64, u32), Vec<&RecordRef<'a>>> = BTreeMap::new();
    for r in records {
        groups
            .entry((
                r.kind(),
                utc_day(r.ts()),
                user_partition(r.unit_id(), partitions),
            ))
            .or_default()
            .push(r);
    }
    let mut written = Vec::with_capacity(groups.len());
    for ((kind, day, part), mut rows) in groups {
        rows.sort_by(|a, b| {
            a.ts()
                .cmp(&b.ts())
                .then_with(|| a.unit_id().cmp(b.unit_id()))
        });
        let dir = partition_dir(root, kind, day, part, partitions);
        create_dirs(root, &dir)?;
        let path = dir.join(format!("{}.parquet", opts.file_stem));
        let batch = to_batch(kind, &rows, &path)?;
        write_file_atomic(&path, batch.schema(), &[batch], opts.row_group_rows)?;
        written.push(path);
    }
    Ok(written)
}

/// Reads every batch of a Parquet file.
pub fn read_file(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).map_err(|e| StoreError::io("open parquet file", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| StoreError::parquet(path, e))?
        .build()
        .map_err(|e| StoreError::parquet(path, e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| StoreError::parquet(path, e))?;
    Ok((schema, batches))
}

/// What [`rewrite_filtered`] did to a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Rows removed.
    pub removed: u64,
    /// Rows kept.
    pub kept: u64,
}

/// Keeps the rows of the file at `path` for which `keep` is true: the file
/// is left alone when every row is kept, deleted when none is, otherwise
/// replaced atomically.
pub fn rewrite_filtered(
    path: &Path,
    row_group_rows: usize,
    keep: &dyn Fn(&RecordBatch) -> Result<BooleanArray>,
) -> Result<Rewrite> {
    let (schema, batches) = read_file(path)?;
    let mut out = Vec::with_capacity(batches.len());
    let mut r = Rewrite::default();
    for b in &batches {
        let mask = keep(b)?;
        let kept = arrow_select::filter::filter_record_batch(b, &mask)
            .map_err(|e| StoreError::parquet(path, e))?;
        r.kept += kept.num_rows() as u64;
        r.removed += (b.num_rows() - kept.num_rows()) as u64;
        out.push(kept);
    }
    if r.removed == 0 {
        return Ok(r);
    }
    if r.kept == 0 {
        fs::remove_file(path).map_err(|e| StoreError::io("remove parquet file", path, e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        return Ok(r);
    }
    write_file_atomic(path, schema, &out, row_group_rows)?;
    Ok(r)
}

/// A string column of a batch by name.
pub fn string_column<'a>(b: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| StoreError::parquet(path, format!("no string column `{name}`")))
}

/// A timestamp column of a batch by name.
pub fn ts_column<'a>(
    b: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a TimestampMicrosecondArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| StoreError::parquet(path, format!("no timestamp column `{name}`")))
}

/// Every `.parquet` file under `dir` (recursively), hidden entries skipped.
pub fn list_parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| StoreError::io("list directory", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &d, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::tests::sample_event;
    use crate::record::{Alias, Event, Exposure};
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;

    fn map_at(b: &RecordBatch, name: &str, row: usize) -> BTreeMap<String, String> {
        let entries = b.column_by_name(name).unwrap().as_map().value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        (0..entries.len())
            .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
            .collect()
    }

    /// Every record stored under `root`, read back from the Parquet files.
    pub(crate) fn read_back(root: &Path) -> Vec<Record> {
        let mut out = Vec::new();
        for f in list_parquet_files(root).unwrap() {
            let (_, batches) = read_file(&f).unwrap();
            let events = f.to_string_lossy().contains("kind=events");
            let aliases = f.to_string_lossy().contains("kind=aliases");
            for b in &batches {
                let s = |n: &str, i: usize| {
                    b.column_by_name(n)
                        .unwrap()
                        .as_string::<i32>()
                        .value(i)
                        .to_string()
                };
                let t = |n: &str, i: usize| {
                    b.column_by_name(n)
                        .unwrap()
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(i)
                };
                let flag = |n: &str, i: usize| b.column_by_name(n).unwrap().as_boolean().value(i);
                for i in 0..b.num_rows() {
                    out.push(if aliases {
                        Record::Alias(Alias {
                            anonymous_id: s("anonymous_id", i),
                            user_id: s("user_id", i),
                            ts: t("ts", i),
                            received_at: t("received_at", i),
                        })
                    } else if events {
                        let v = b
                            .column_by_name("value")
                            .unwrap()
                            .as_primitive::<arrow_array::types::Float64Type>();
                        Record::Event(Event {
                            event_id: s("event_id", i),
                            unit_id: s("unit_id", i),
                            event_type: s("type", i),
                            ts: t("ts", i),
                            received_at: t("received_at", i),
                            value: v.is_valid(i).then(|| v.value(i)),
                            properties: map_at(b, "properties", i),
                            is_bot: flag("is_bot", i),
                            opted_out: flag("opted_out", i),
                        })
                    } else {
                        Record::Exposure(Exposure {
                            unit_id: s("unit_id", i),
                            experiment: s("experiment", i),
                            variant: s("variant", i),
                            assigned_variant: s("assigned_variant", i),
                            opted_out: flag("opted_out", i),
                            ts: t("ts", i),
                            received_at: t("received_at", i),
                            attributes: map_at(b, "attributes", i),
                            is_bot: flag("is_bot", i),
                        })
                    });
                }
            }
        }
        out
    }

    /// Events and exposures with empty, one-entry and non-ASCII maps, and
    /// a few aliases.
    pub(crate) fn mixed_records() -> Vec<Record> {
        let mut out: Vec<Record> = (0..300).map(sample_event).collect();
        for i in 0..40u64 {
            let mut attributes = BTreeMap::new();
            if i % 3 != 0 {
                attributes.insert(
                    "country".to_string(),
                    ["DE", "FR"][(i % 2) as usize].to_string(),
                );
            }
            if i % 5 == 0 {
                attributes.insert("städt".to_string(), "Zürich ✓".to_string());
            }
            out.push(Record::Exposure(Exposure {
                unit_id: format!("ü{i}"),
                experiment: "exp".into(),
                variant: ["a", "b"][(i % 2) as usize].into(),
                assigned_variant: "a".into(),
                opted_out: i % 7 == 0,
                ts: 1_767_225_600_000_000 + i as i64 * 1_000,
                received_at: 1_767_225_600_000_000 + i as i64 * 1_000 + 3,
                attributes,
                is_bot: i % 6 == 1,
            }));
        }
        for i in 0..12u64 {
            out.push(Record::Alias(Alias {
                anonymous_id: format!("ü{i}"),
                user_id: format!("user-{}", i / 2),
                ts: 1_767_225_600_000_000 + i as i64 * 7_000_000_000,
                received_at: 1_767_225_600_000_000 + i as i64 * 7_000_000_000 + 9,
            }));
        }
        out
    }

    /// `v` in a fixed order, to compare record sets.
    pub(crate) fn sorted(mut v: Vec<Record>) -> Vec<Record> {
        v.sort_by_key(|r| format!("{r:?}"));
        v
    }

    #[test]
    fn every_field_round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let records = mixed_records();
        write_records(dir.path(), &records, &WriteOptions::new("seg-1-1")).unwrap();
        assert_eq!(sorted(read_back(dir.path())), sorted(records));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(-1), "1969-12-31");
        assert_eq!(date_string(20_454), "2026-01-01");
        assert_eq!(date_string(11_016), "2000-02-29");
        // Years 0001 to 4160 (negative years are out of scope).
        for d in -719_000..800_000i64 {
            if d % 997 == 0 {
                assert_eq!(parse_date(&date_string(d)), Some(d));
            }
        }
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("x"), None);
    }

    #[test]
    fn writes_partitioned_files_and_redo_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..500).map(sample_event).collect();
        let opts = WriteOptions::new("seg-1-1");
        let files = write_records(dir.path(), &records, &opts).unwrap();
        let again = write_records(dir.path(), &records, &opts).unwrap();
        assert_eq!(files, again);
        let all = list_parquet_files(dir.path()).unwrap();
        assert_eq!(all.len(), files.len());
        let mut rows = 0;
        for f in &all {
            let s = f.to_string_lossy();
            assert!(s.contains("kind=events/date=2026-01-01/part="), "{s}");
            let (_, batches) = read_file(f).unwrap();
            let part: u32 = s.split("part=").nth(1).unwrap()[..2].parse().unwrap();
            for b in &batches {
                let units = string_column(b, "unit_id", f).unwrap();
                for u in units.iter().flatten() {
                    assert_eq!(user_partition(u, 16), part);
                }
                let ts = ts_column(b, "ts", f).unwrap();
                assert!(ts.values().windows(2).all(|w| w[0] <= w[1]), "sorted by ts");
                rows += b.num_rows();
            }
        }
        assert_eq!(rows, 500);
        // No temporary file is left behind.
        assert!(walk_all(dir.path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp")));
    }

    fn walk_all(d: &Path) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                v.extend(walk_all(&p));
            } else {
                v.push(p);
            }
        }
        v
    }

    #[test]
    fn rewrite_filtered_keeps_deletes_or_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..50).map(sample_event).collect();
        let mut opts = WriteOptions::new("x");
        opts.partitions = 1;
        let files = write_records(dir.path(), &records, &opts).unwrap();
        let f = &files[0];
        let drop_u3 = |b: &RecordBatch| -> Result<BooleanArray> {
            let u = string_column(b, "unit_id", Path::new("x"))?;
            Ok(u.iter().map(|v| Some(v != Some("u3"))).collect())
        };
        let r = rewrite_filtered(f, 1000, &drop_u3).unwrap();
        assert_eq!(
            r,
            Rewrite {
                removed: 1,
                kept: 49
            }
        );
        let r = rewrite_filtered(f, 1000, &drop_u3).unwrap();
        assert_eq!(
            r,
            Rewrite {
                removed: 0,
                kept: 49
            }
        );
        let none = |b: &RecordBatch| -> Result<BooleanArray> {
            Ok(BooleanArray::from(vec![false; b.num_rows()]))
        };
        rewrite_filtered(f, 1000, &none).unwrap();
        assert!(!f.exists());
    }
}
