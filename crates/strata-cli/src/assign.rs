//! `strata assign`: evaluate a snapshot for a unit, a list of unit ids or a
//! stream of NDJSON contexts, writing one JSON object per unit.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{ArgGroup, Args};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};
use strata_core::{Assignment, CompiledSnapshot, Context};

/// Arguments of `strata assign`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["unit", "units", "contexts"])))]
pub struct AssignArgs {
    /// Config snapshot (JSON) to evaluate.
    #[arg(long, value_name = "SNAPSHOT.json")]
    config: PathBuf,
    /// One unit: sets the context's `user_id`.
    #[arg(long, value_name = "ID")]
    unit: Option<String>,
    /// A file with one `user_id` per line (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    units: Option<PathBuf>,
    /// An NDJSON file with one context object per line (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    contexts: Option<PathBuf>,
    /// A context attribute `key=value`; the value is read as JSON when it parses
    /// (numbers, booleans), else as a string. Repeatable; with --units and
    /// --contexts it applies to every line (a context's own attributes win).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    attrs: Vec<String>,
    /// Only experiments on this surface (and those on every surface).
    #[arg(long, value_name = "S")]
    surface: Option<String>,
}

/// Runs `strata assign`.
pub fn run(args: &AssignArgs) -> Result<()> {
    let snapshot = load_snapshot(&args.config)?;
    let base = parse_attrs(&args.attrs)?;
    let surface = args.surface.as_deref();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut buf = Vec::new();

    if let Some(unit) = &args.unit {
        let mut ctx = Context::from(base);
        ctx.insert("user_id", Value::String(unit.clone()));
        write_line(&mut out, &snapshot, &ctx, surface, &mut buf)?;
    } else if let Some(path) = &args.units {
        let mut ctx = Context::from(base);
        for_each_line(path, |line_no, line| {
            let id = std::str::from_utf8(line).with_context(|| {
                format!("{}:{line_no}: unit id is not valid utf-8", path.display())
            })?;
            ctx.insert("user_id", Value::String(id.to_owned()));
            write_line(&mut out, &snapshot, &ctx, surface, &mut buf)
        })?;
    } else if let Some(path) = &args.contexts {
        for_each_line(path, |line_no, line| {
            let value: Value = serde_json::from_slice(line)
                .with_context(|| format!("{}:{line_no}: invalid json", path.display()))?;
            let Value::Object(own) = value else {
                bail!(
                    "{}:{line_no}: a context must be a json object",
                    path.display()
                );
            };
            let ctx = if base.is_empty() {
                Context::from(own)
            } else {
                let mut merged = base.clone();
                merged.extend(own);
                Context::from(merged)
            };
            write_line(&mut out, &snapshot, &ctx, surface, &mut buf)
        })?;
    }
    out.flush().context("writing output")?;
    Ok(())
}

fn load_snapshot(path: &Path) -> Result<CompiledSnapshot> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read config {}", path.display()))?;
    CompiledSnapshot::from_slice(&bytes).with_context(|| format!("{}", path.display()))
}

fn parse_attrs(attrs: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for attr in attrs {
        let Some((key, raw)) = attr.split_once('=') else {
            bail!("invalid --attr {attr:?}: expected key=value");
        };
        if key.is_empty() {
            bail!("invalid --attr {attr:?}: empty key");
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// Calls `f(line_number, line)` for each line of `path` (`-` = stdin), without
/// the line terminator (`\n` or `\r\n`).
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        f(line_no, &line)?;
    }
}

/// One output line: `{"unit": …, "assignments": {key: {…}, …}}`, keys in
/// snapshot order, and, when the snapshot has a global holdout, the
/// context's holdout exposures (`"holdout": [{"unit_attr", "unit_id",
/// "variant"}]`, assignment spec section 11).
#[derive(Serialize)]
struct Line<'a> {
    unit: Option<&'a Value>,
    #[serde(serialize_with = "by_experiment")]
    assignments: &'a [Assignment<'a>],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    holdout: Vec<HoldoutOut<'a>>,
}

/// A holdout exposure as printed.
#[derive(Serialize)]
struct HoldoutOut<'a> {
    unit_attr: &'a str,
    unit_id: String,
    variant: &'static str,
}

#[derive(Serialize)]
struct Decision<'a> {
    variant: &'a str,
    assigned: &'a str,
    flag: &'a str,
    log_exposure: bool,
}

fn by_experiment<S: Serializer>(assignments: &&[Assignment<'_>], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(assignments.len()))?;
    for a in assignments.iter() {
        let decision = Decision {
            variant: a.variant,
            assigned: a.assigned,
            flag: a.flag,
            log_exposure: a.log_exposure,
        };
        map.serialize_entry(a.experiment, &decision)?;
    }
    map.end()
}

fn write_line<'s>(
    out: &mut impl Write,
    snapshot: &'s CompiledSnapshot,
    ctx: &Context,
    surface: Option<&str>,
    buf: &mut Vec<Assignment<'s>>,
) -> Result<()> {
    buf.clear();
    snapshot.evaluate_into(ctx, surface, buf);
    let holdout = snapshot
        .holdout_exposures(ctx, surface)
        .into_iter()
        .map(|h| HoldoutOut {
            variant: h.variant(),
            unit_attr: h.unit_attr,
            unit_id: h.unit_id,
        })
        .collect();
    let line = Line {
        unit: ctx.get("user_id"),
        assignments: buf,
        holdout,
    };
    serde_json::to_writer(&mut *out, &line).context("writing output")?;
    out.write_all(b"\n").context("writing output")?;
    Ok(())
}
