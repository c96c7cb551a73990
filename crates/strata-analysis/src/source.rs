//! Input data: exposures, events and aliases as NDJSON, CSV or Parquet, one
//! file or a directory or glob of files, Hive-style partitions allowed.
//!
//! Each input is registered with DataFusion as a listing table
//! (`exposures_raw`, `events_raw`, `aliases_raw`). Exposures and events are
//! exposed through a canonical view (`exposures`, `events`) whose columns
//! have fixed names and types; aliases are reduced to one row per anonymous
//! id ([`read_aliases`]), through which those views resolve `unit_id`. The
//! column rules are in `docs/data-model.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

/// The file format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputFormat {
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON, one object per line.
    Ndjson,
    /// Comma-separated values with a header line.
    Csv,
}

impl InputFormat {
    /// The format of a file extension (`parquet`, `ndjson`, `jsonl`, `json`, `csv`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => Some(InputFormat::Parquet),
            "ndjson" | "jsonl" | "json" => Some(InputFormat::Ndjson),
            "csv" => Some(InputFormat::Csv),
            _ => None,
        }
    }
}

/// A registered input.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// `exposures`, `events` or `aliases`.
    pub table: &'static str,
    /// The path as given.
    pub path: String,
    /// Detected format.
    pub format: InputFormat,
    /// Local files, when known (for locating bad lines).
    pub files: Vec<PathBuf>,
    /// Schema, partition columns included.
    pub schema: SchemaRef,
}

impl Source {
    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::Input {
            table: self.table,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The distinct values of the `part=` directories of the input's files,
    /// when every file is under one (the pipeline's user partitions); empty
    /// otherwise (a single file, a glob, another layout).
    pub(crate) fn slices(&self) -> Vec<String> {
        if self.column("part").is_none() {
            return Vec::new();
        }
        part_values(Path::new(&self.path), &self.files)
    }

    /// Checks, after a query, that it read what was listed: the pipeline
    /// merges its small files into larger ones, and a query that ran while a
    /// merge replaced files could have read some rows twice or not at all.
    /// A file listed before and gone now, or a merge not yet finished, fails
    /// the analysis (run it again) rather than answer from such a read.
    /// Inputs outside the pipeline's layout are not checked.
    pub(crate) fn check_unchanged(&self) -> Result<()> {
        if !self.files.iter().any(|f| segment_range(f).is_some()) {
            return Ok(());
        }
        if let Some(gone) = self.files.iter().find(|f| !f.exists()) {
            return Err(self.error(format!(
                "{} was merged or removed while the analysis read it; run it again",
                gone.display()
            )));
        }
        let mut now = Vec::new();
        walk(Path::new(&self.path), &mut now).map_err(|e| self.error(e.to_string()))?;
        merge_in_progress(&self.path, &now).map_err(|reason| self.error(reason))
    }

    pub(crate) fn column(&self, name: &str) -> Option<&DataType> {
        self.schema
            .fields()
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.data_type())
    }
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

fn ext_of(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Data files under a directory (hidden and `_`-prefixed entries skipped).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The segment range of a file of the pipeline's layout
/// (`seg-<first>-<last>.parquet`, `docs/data-model.md`).
fn segment_range(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let (a, b) = name
        .strip_suffix(".parquet")?
        .strip_prefix("seg-")?
        .split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// An error when a directory of the pipeline's layout holds a file whose
/// segment range lies inside another file's: the input of a merge of small
/// files whose output is written but which is not finished, so its rows
/// are in two files.
fn merge_in_progress(dir: &str, files: &[PathBuf]) -> std::result::Result<(), String> {
    let mut by_dir: std::collections::BTreeMap<&Path, Vec<(u64, u64)>> = Default::default();
    for f in files {
        if let (Some(r), Some(parent)) = (segment_range(f), f.parent()) {
            by_dir.entry(parent).or_default().push(r);
        }
    }
    for ranges in by_dir.values() {
        let inside = |&(a, b): &(u64, u64)| {
            ranges
                .iter()
                .any(|&(c, d)| (c, d) != (a, b) && c <= a && b <= d)
        };
        if ranges.iter().any(inside) {
            return Err(format!(
                "the pipeline is merging small files in {dir}; run the analysis again in a moment"
            ));
        }
    }
    Ok(())
}

/// An input path resolved to its format, file extension, listing URL and
/// local files, before anything is registered.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    table: &'static str,
    path: String,
    format: InputFormat,
    ext: String,
    url: String,
    files: Vec<PathBuf>,
}

impl Listing {
    /// The distinct values of the `part=` directories below the input (see
    /// [`Source::slices`]).
    pub(crate) fn part_values(&self) -> Vec<String> {
        part_values(Path::new(&self.path), &self.files)
    }
}

/// Finds the format, extension, listing URL and local files of an input path.
pub(crate) fn list(table: &'static str, path: &str) -> Result<Listing> {
    let listing = |format, ext, url, files| Listing {
        table,
        path: path.to_string(),
        format,
        ext,
        url,
        files,
    };
    let err = |reason: String| Error::Input {
        table,
        path: path.to_string(),
        reason,
    };
    const KNOWN: &str = "expected .parquet, .ndjson, .jsonl, .json or .csv files";
    if is_glob(path) {
        let ext = ext_of(Path::new(path))
            .filter(|e| InputFormat::from_extension(e).is_some())
            .ok_or_else(|| err(format!("a glob must end in a file extension: {KNOWN}")))?;
        let format = InputFormat::from_extension(&ext).ok_or_else(|| err(KNOWN.into()))?;
        let abs = std::path::absolute(path).map_err(|e| err(e.to_string()))?;
        return Ok(listing(format, ext, abs.display().to_string(), Vec::new()));
    }
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| err(e.to_string().to_lowercase()))?;
    let abs = std::path::absolute(p).map_err(|e| err(e.to_string()))?;
    if meta.is_file() {
        let ext = ext_of(p).unwrap_or_default();
        let format = InputFormat::from_extension(&ext)
            .ok_or_else(|| err(format!("unknown file extension `{ext}`: {KNOWN}")))?;
        return Ok(listing(format, ext, abs.display().to_string(), vec![abs]));
    }
    // The pipeline's Parquet root holds both tables (`kind=exposures/…`,
    // `kind=events/…`): read as one directory it would mix their schemas,
    // so each table reads its own `kind=` directory of it.
    if let Some(own) = pipeline_kind_dir(table, p).map_err(err)? {
        return list(table, &own.display().to_string());
    }
    let mut files = Vec::new();
    walk(p, &mut files).map_err(|e| err(e.to_string()))?;
    if let Some(root) = files.iter().find_map(|f| pipeline_root_below(p, f)) {
        return Err(err(format!(
            "directory holds the pipeline's Parquet root {}; pass that root or its `kind={table}` directory",
            root.display()
        )));
    }
    let exts: BTreeSet<String> = files
        .iter()
        .filter_map(|f| ext_of(f))
        .filter(|e| InputFormat::from_extension(e).is_some())
        .collect();
    let ext = match exts.len() {
        0 => return Err(err(format!("no data files in directory: {KNOWN}"))),
        1 => exts.into_iter().next().unwrap_or_default(),
        _ => {
            return Err(err(format!(
                "directory mixes file types ({}); use one format or a glob",
                exts.into_iter().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let format = InputFormat::from_extension(&ext).ok_or_else(|| err(KNOWN.into()))?;
    files.retain(|f| ext_of(f).as_deref() == Some(ext.as_str()));
    files.sort();
    merge_in_progress(path, &files).map_err(err)?;
    let mut url = abs.display().to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(listing(format, ext, url, files))
}

/// The `kind=` directories of the pipeline's Parquet root, one per table
/// it writes (`docs/data-model.md`, "Storage layout").
const KINDS: [&str; 3] = ["kind=exposures", "kind=events", "kind=aliases"];

/// Whether `dir` is the pipeline's Parquet root: it has a `kind=`
/// subdirectory of one of the pipeline's tables.
fn is_pipeline_root(dir: &Path) -> bool {
    KINDS.iter().any(|k| dir.join(k).is_dir())
}

/// The `kind={table}` directory of `dir` when `dir` is the pipeline's
/// Parquet root (it has `kind=exposures`, `kind=events` or `kind=aliases`
/// subdirectories, see `docs/data-model.md`, "Storage layout"); `None` for
/// any other directory; an error when it is such a root without the
/// table's own directory.
fn pipeline_kind_dir(table: &'static str, dir: &Path) -> Result<Option<PathBuf>, String> {
    if !is_pipeline_root(dir) {
        return Ok(None);
    }
    let own = dir.join(format!("kind={table}"));
    if own.is_dir() {
        Ok(Some(own))
    } else {
        Err(format!(
            "a pipeline Parquet root without `kind={table}`: the pipeline has written no {table} yet"
        ))
    }
}

/// The pipeline's Parquet root that `file` is under, when it is strictly
/// below `dir` (`dir` is then an ancestor of the root, such as the server's
/// data directory, and would mix the tables).
fn pipeline_root_below(dir: &Path, file: &Path) -> Option<PathBuf> {
    let below = file.strip_prefix(dir).ok()?;
    let mut root = dir.to_path_buf();
    for c in below.components() {
        let name = c.as_os_str().to_str()?;
        if KINDS.contains(&name) {
            return (root != dir).then_some(root);
        }
        root.push(name);
    }
    None
}

/// The aliases input of an analysis: `given`, or else the pipeline's
/// `kind=aliases` directory beside one of `inputs` (the events and
/// exposures paths) that is the pipeline's Parquet root or a `kind=`
/// directory of one. `None` when there is none: a pipeline written before
/// aliases existed has none, and neither has a file, a glob or another
/// directory.
pub(crate) fn aliases_path(given: Option<&str>, inputs: [&str; 2]) -> Option<String> {
    if let Some(path) = given {
        return Some(path.to_string());
    }
    inputs.iter().find_map(|input| {
        let dir = Path::new(input);
        if is_glob(input) || !dir.is_dir() {
            return None;
        }
        let root = if is_pipeline_root(dir) {
            dir
        } else {
            let name = dir.file_name()?.to_str()?;
            let parent = dir.parent()?;
            (KINDS.contains(&name) && is_pipeline_root(parent)).then_some(parent)?
        };
        let own = root.join("kind=aliases");
        // A directory the pipeline made but has written no file to yet is
        // no aliases either.
        let mut files = Vec::new();
        let written = walk(&own, &mut files).is_ok()
            && files
                .iter()
                .any(|f| ext_of(f).is_some_and(|e| InputFormat::from_extension(&e).is_some()));
        written.then(|| own.display().to_string())
    })
}

/// The distinct `part=` directory values of `files` below `root` (the
/// directories the query engine reads as the `part` column); empty unless
/// every file is under one.
fn part_values(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let below = f.strip_prefix(root).unwrap_or(Path::new(""));
        let part = below.components().rev().skip(1).find_map(|c| {
            c.as_os_str()
                .to_str()
                .and_then(|c| c.strip_prefix("part="))
                .map(str::to_string)
        });
        match part {
            Some(p) => out.insert(p),
            None => return Vec::new(),
        };
    }
    out.into_iter().collect()
}

/// Registers a listed input as the table `{table}_raw` and returns its
/// description.
pub(crate) async fn register(ctx: &SessionContext, listing: Listing) -> Result<Source> {
    let Listing {
        table,
        path,
        format,
        ext,
        url,
        files,
    } = listing;
    let err = |reason: String| Error::Input {
        table,
        path: path.clone(),
        reason,
    };
    let file_format: Arc<dyn FileFormat> = match format {
        InputFormat::Parquet => Arc::new(ParquetFormat::default()),
        InputFormat::Ndjson => Arc::new(JsonFormat::default()),
        InputFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
    };
    let options = ListingOptions::new(file_format).with_file_extension(format!(".{ext}"));
    let table_url = ListingTableUrl::parse(&url).map_err(|e| err(e.to_string()))?;
    let state = ctx.state();
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .infer_partitions_from_path(&state)
        .await
        .map_err(|e| err(format!("partitions: {e}")))?
        .infer_schema(&state)
        .await
        .map_err(|e| err(format!("reading schema: {e}")))?;
    let provider = ListingTable::try_new(config).map_err(|e| err(e.to_string()))?;
    let schema = datafusion::catalog::TableProvider::schema(&provider);
    if schema.fields().is_empty() {
        return Err(err("no columns (empty input?)".into()));
    }
    ctx.register_table(format!("{table}_raw"), Arc::new(provider))?;
    Ok(Source {
        table,
        path,
        format,
        files,
        schema,
    })
}

/// SQL identifier quoting.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL string literal quoting.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL string literals separated by commas, for an `IN (…)` list.
pub(crate) fn literal_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    values
        .into_iter()
        .map(literal)
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_stringy(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_stringy(v),
        _ => false,
    }
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Dictionary(_, v) if v.is_integer())
}

/// A string-valued key column.
fn key_expr(src: &Source, name: &str) -> Result<String> {
    match src.column(name) {
        None => Err(src.error(format!("missing required column `{name}`"))),
        Some(t) if is_stringy(t) || is_integer(t) => {
            Ok(format!("CAST({} AS VARCHAR)", ident(name)))
        }
        Some(t) => Err(src.error(format!("column `{name}` has type {t}; expected a string"))),
    }
}

/// A timestamp column as BIGINT nanoseconds since the Unix epoch (UTC).
fn ts_expr(src: &Source, name: &str) -> Result<String> {
    let q = ident(name);
    match src.column(name) {
        None => Err(src.error(format!("missing required column `{name}`"))),
        Some(t) if is_stringy(t) => Ok(format!(
            "CAST(CAST(CAST({q} AS VARCHAR) AS TIMESTAMP) AS BIGINT)"
        )),
        Some(DataType::Timestamp(unit, _)) => {
            let factor = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            Ok(format!("(CAST({q} AS BIGINT) * {factor})"))
        }
        Some(t) => Err(src.error(format!(
            "column `{name}` has type {t}; expected an RFC 3339 string or a timestamp"
        ))),
    }
}

fn bool_expr(src: &Source, name: &str) -> Result<String> {
    match src.column(name) {
        None => Ok("false".into()),
        Some(DataType::Boolean) => Ok(format!("COALESCE({}, false)", ident(name))),
        Some(DataType::Null) => Ok("false".into()),
        Some(t) => Err(src.error(format!("column `{name}` has type {t}; expected a boolean"))),
    }
}

/// How to read a nested attribute: a top-level column `name`, a column
/// `{parent}.{name}`, or a field of a struct or map column `parent`.
pub(crate) fn nested_expr(
    src: &Source,
    parent: &str,
    name: &str,
    top_level: bool,
) -> Option<String> {
    if top_level && src.column(name).is_some() {
        return Some(ident(name));
    }
    let dotted = format!("{parent}.{name}");
    if src.column(&dotted).is_some() {
        return Some(ident(&dotted));
    }
    match src.column(parent) {
        Some(DataType::Struct(fields)) if fields.iter().any(|f| f.name() == name) => {
            Some(format!("get_field({}, {})", ident(parent), literal(name)))
        }
        Some(DataType::Map(..)) => Some(format!("get_field({}, {})", ident(parent), literal(name))),
        _ => None,
    }
}

/// The `SELECT` of a canonical view: `cols` (expression and name, `unit_id`
/// among them) of the rows of `{table}_raw` with a `ts` and meeting
/// `filter` (SQL conditions, each starting with ` AND `). With `aliased`,
/// `unit_id` is resolved through the table `alias_map` ([`Aliases`]): the
/// user id of the unit's earliest alias when it is an anonymous id that
/// has one, else itself. The map is written as the build side of the join,
/// the side held in memory while the other streams past it: without
/// statistics it stays there, and with them the planner builds whichever
/// side it estimates smaller (the map, beside any sizeable input). The
/// input is the join's preserved side, so a query's filters on its own
/// columns (the time range) still reach its scan. Without aliases there is
/// no join at all.
fn view_select(table: &str, cols: &[(String, String)], filter: &str, aliased: bool) -> String {
    let own = |(e, name): &(String, String)| format!("{e} AS {name}");
    let select = cols.iter().map(own).collect::<Vec<_>>().join(", ");
    let rows = format!(
        "SELECT {select} FROM {table}_raw WHERE {} IS NOT NULL{filter}",
        ident("ts")
    );
    if !aliased {
        return rows;
    }
    let resolved: Vec<String> = cols
        .iter()
        .map(|(_, name)| match name.as_str() {
            "unit_id" => "COALESCE(m.user_id, x.unit_id) AS unit_id".to_string(),
            _ => format!("x.{name}"),
        })
        .collect();
    format!(
        "SELECT {} FROM {ALIAS_MAP} m RIGHT JOIN ({rows}) x ON m.anonymous_id = x.unit_id",
        resolved.join(", ")
    )
}

/// The canonical exposures view: `unit_id`, `experiment`, `variant`,
/// `assigned_variant`, `opted_out`, `ts` (ns) and `seg_0..` for segments.
/// A bot's exposures (`is_bot`) are left out here, as a bot's events are
/// by every query over events: no stage of the analysis sees them. With
/// `aliased`, `unit_id` is resolved through the aliases ([`view_select`]).
pub(crate) fn exposures_view(src: &Source, segments: &[String], aliased: bool) -> Result<String> {
    let unit = key_expr(src, "unit_id")?;
    let experiment = key_expr(src, "experiment")?;
    let variant = key_expr(src, "variant")?;
    let assigned = match src.column("assigned_variant") {
        None => variant.clone(),
        Some(DataType::Null) => variant.clone(),
        Some(_) => format!(
            "COALESCE({}, {variant})",
            key_expr(src, "assigned_variant")?
        ),
    };
    let opted = bool_expr(src, "opted_out")?;
    let bot = bool_expr(src, "is_bot")?;
    let ts = ts_expr(src, "ts")?;
    let mut cols = vec![
        (unit, "unit_id".to_string()),
        (experiment, "experiment".to_string()),
        (variant, "variant".to_string()),
        (assigned, "assigned_variant".to_string()),
        (opted, "opted_out".to_string()),
        (ts, "ts".to_string()),
    ];
    for (i, s) in segments.iter().enumerate() {
        let e = nested_expr(src, "attributes", s, true).ok_or_else(|| {
            src.error(format!(
                "segment attribute `{s}` not found (no column `{s}`, `attributes.{s}` or field of `attributes`)"
            ))
        })?;
        cols.push((format!("CAST({e} AS VARCHAR)"), format!("seg_{i}")));
    }
    Ok(view_select(
        "exposures",
        &cols,
        &format!(" AND NOT {bot}"),
        aliased,
    ))
}

/// The canonical events view: `event_id`, `unit_id`, `type`, `ts` (ns),
/// `value` (double), `is_bot`, `opted_out`, the property columns `prop_0..` and, with
/// `part`, the partition column `part` (for slicing; a filter on it prunes
/// directories). With `aliased`, `unit_id` is resolved through the aliases
/// ([`view_select`]).
pub(crate) fn events_view(
    src: &Source,
    properties: &[String],
    part: bool,
    aliased: bool,
) -> Result<String> {
    let event_id = key_expr(src, "event_id")?;
    let unit = key_expr(src, "unit_id")?;
    let kind = key_expr(src, "type")?;
    let ts = ts_expr(src, "ts")?;
    let value = match src.column("value") {
        None | Some(DataType::Null) => "CAST(NULL AS DOUBLE)".to_string(),
        Some(t) if t.is_numeric() => format!("CAST({} AS DOUBLE)", ident("value")),
        Some(t) => return Err(src.error(format!("column `value` has type {t}; expected a number"))),
    };
    let bot = bool_expr(src, "is_bot")?;
    let opted = bool_expr(src, "opted_out")?;
    let mut cols = vec![
        (event_id, "event_id".to_string()),
        (unit, "unit_id".to_string()),
        (kind, "type".to_string()),
        (ts, "ts".to_string()),
        (value, "value".to_string()),
        (bot, "is_bot".to_string()),
        (opted, "opted_out".to_string()),
    ];
    for (i, p) in properties.iter().enumerate() {
        let e = nested_expr(src, "properties", p, false).ok_or_else(|| {
            src.error(format!(
                "property `{p}` used by a metric filter not found (no column `properties.{p}` or field of `properties`)"
            ))
        })?;
        cols.push((e, format!("prop_{i}")));
    }
    if part {
        cols.push((
            format!("CAST({} AS VARCHAR)", ident("part")),
            "part".to_string(),
        ));
    }
    Ok(view_select("events", &cols, "", aliased))
}

/// The table the canonical views join to resolve `unit_id`: one row per
/// anonymous id, `anonymous_id` and `user_id` ([`alias_map_sql`]).
pub(crate) const ALIAS_MAP: &str = "alias_map";

/// The aliases reduced to one row per anonymous id: the `user_id` of its
/// earliest alias (by `ts`, ties by the smallest `user_id`), so that a
/// shared device that signed in as several users counts for the first.
/// Rows with a null or empty id or a null `ts` are ignored, and so is an
/// alias of an id to itself (it would resolve to itself anyway).
pub(crate) fn alias_map_sql(src: &Source) -> Result<String> {
    let anonymous = key_expr(src, "anonymous_id")?;
    let user = key_expr(src, "user_id")?;
    let ts = ts_expr(src, "ts")?;
    Ok(format!(
        "SELECT anonymous_id, first_value(user_id ORDER BY ts, user_id) AS user_id FROM (\
         SELECT {anonymous} AS anonymous_id, {user} AS user_id, {ts} AS ts \
         FROM aliases_raw WHERE {q} IS NOT NULL\
         ) WHERE anonymous_id <> '' AND user_id <> '' AND anonymous_id <> user_id \
         GROUP BY anonymous_id",
        q = ident("ts")
    ))
}

/// The aliases of an analysis, as its views use them: the map of
/// [`alias_map_sql`], held in memory (one row per anonymous id that signed
/// in, small beside the events), and the input it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Aliases {
    /// The aliases input (for [`Source::check_unchanged`]).
    pub source: Source,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl Aliases {
    /// Registers the map as [`ALIAS_MAP`], the table the views join.
    pub(crate) async fn register(
        &self,
        ctx: &SessionContext,
        tables: &crate::cluster::Tables,
    ) -> Result<()> {
        tables
            .register(ctx, ALIAS_MAP, self.schema.clone(), self.batches.clone())
            .await
    }
}

/// Reads the aliases input at `path` into its map ([`Aliases`]), in a
/// session of its own (under `memory_limit`, if any): whether there are
/// aliases decides how the analysis' own session is set up (no slicing,
/// so no greedy memory pool). `None` when the input holds no alias: the
/// views are then exactly those without aliases.
pub(crate) async fn read_aliases(
    path: &str,
    memory_limit: Option<usize>,
) -> Result<Option<Aliases>> {
    let listing = list("aliases", path)?;
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(limit),
        ));
    }
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.build_arc()?);
    let source = register(&ctx, listing).await?;
    let df = ctx.sql(&alias_map_sql(&source)?).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = match df.collect().await {
        Ok(b) => b,
        Err(e) => return Err(diagnose_timestamps(&ctx, &source).await.unwrap_or(e.into())),
    };
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    Ok(Some(Aliases {
        source,
        schema,
        batches,
    }))
}

/// After a failed query: looks for a timestamp that does not parse and names
/// its file and line when the input is text.
pub(crate) async fn diagnose_timestamps(ctx: &SessionContext, src: &Source) -> Option<Error> {
    if !src.column("ts").is_some_and(is_stringy) {
        return None;
    }
    let sql = format!(
        "SELECT CAST(ts AS VARCHAR) AS v FROM {}_raw WHERE ts IS NOT NULL AND TRY_CAST(CAST(ts AS VARCHAR) AS TIMESTAMP) IS NULL LIMIT 1",
        src.table
    );
    let batches = ctx.sql(&sql).await.ok()?.collect().await.ok()?;
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let col = batch.column(0);
    let v = datafusion::arrow::util::display::array_value_to_string(col, 0).ok()?;
    let mut location = String::new();
    if src.format != InputFormat::Parquet {
        'files: for f in &src.files {
            if let Ok(text) = std::fs::read_to_string(f) {
                for (i, line) in text.lines().enumerate() {
                    if line.contains(&v) {
                        location = format!("{} line {}: ", f.display(), i + 1);
                        break 'files;
                    }
                }
            }
        }
    }
    Some(src.error(format!(
        "{location}column `ts`: `{v}` is not an RFC 3339 timestamp"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }

    #[test]
    fn aliases_are_found_beside_the_pipeline_tables_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("parquet");
        touch(&root.join("kind=events/date=2026-01-10/part=00/seg-1-2.parquet"));
        touch(&root.join("kind=exposures/date=2026-01-10/part=00/seg-1-2.parquet"));
        let events = root.join("kind=events");
        let exposures = root.join("kind=exposures");
        let other = dir.path().join("events.ndjson");
        touch(&other);
        // No `kind=aliases` (a pipeline written before aliases): none.
        assert_eq!(aliases_path(None, [&s(&root), &s(&root)]), None);
        // A directory the pipeline made but wrote nothing to: none either.
        std::fs::create_dir_all(root.join("kind=aliases/date=2026-01-10")).unwrap();
        assert_eq!(aliases_path(None, [&s(&root), &s(&root)]), None);
        touch(&root.join("kind=aliases/date=2026-01-10/part=03/seg-1-2.parquet"));
        let own = Some(s(&root.join("kind=aliases")));
        assert_eq!(aliases_path(None, [&s(&root), &s(&root)]), own);
        assert_eq!(aliases_path(None, [&s(&events), &s(&exposures)]), own);
        assert_eq!(aliases_path(None, [&s(&other), &s(&exposures)]), own);
        // A file, a glob, another directory: none; a path given: that one.
        let glob = s(&events.join("**/*.parquet"));
        assert_eq!(aliases_path(None, [&s(&other), &glob]), None);
        assert_eq!(aliases_path(None, [&s(dir.path()), &s(&other)]), None);
        assert_eq!(
            aliases_path(Some("a.ndjson"), [&s(&root), &s(&root)]),
            Some("a.ndjson".into())
        );
        // The root is recognised by its aliases alone, and from above.
        let only = dir.path().join("only");
        touch(&only.join("kind=aliases/date=2026-01-10/part=03/seg-1-2.parquet"));
        assert_eq!(
            pipeline_kind_dir("aliases", &only),
            Ok(Some(only.join("kind=aliases")))
        );
        assert!(pipeline_kind_dir("events", &only).is_err());
        let file = only.join("kind=aliases/date=2026-01-10/part=03/seg-1-2.parquet");
        assert_eq!(pipeline_root_below(dir.path(), &file), Some(only.clone()));
    }
}
