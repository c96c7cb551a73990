//! Reading a rollup for one look: stage 2 in this process, without a join.
//!
//! Each look needs, per unit of its own, the sum of each part's rollup
//! column over the unit's segments inside the part's window, and each
//! quantile metric's values. As SQL that is a hash join of the whole
//! rollup (millions of rows, one per unit and segment) with the look's
//! units, and another for each quantile's values unnested from their
//! lists; for 50 experiments, 50 joins of the same rollup. Here the
//! rollup's units are numbered once ([`Index`]) and each look only marks
//! its units in an array and reads the rows: a lookup by number, no hash
//! table per look.
//!
//! The sums are those of the SQL form ([`segment_in`] is its window
//! condition), in another order of floating-point additions.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

use crate::error::{Error, Result};
use crate::plan::{Agg, Bounds, Part, Window};

/// The rollup's units numbered densely, and the number of each row's unit.
#[derive(Debug)]
pub(crate) struct Index {
    units: HashMap<Box<str>, u32>,
    /// Per batch of the rollup, per row: its unit's number ([`NONE`] for
    /// a row without a unit, which no look reads).
    rows: Vec<Vec<u32>>,
}

/// The number of no unit.
const NONE: u32 = u32::MAX;

/// An engine error for a rollup or units table that is not as this module
/// reads it (never expected: both are made by this crate).
fn shape(what: &str) -> Error {
    Error::Engine(datafusion::error::DataFusionError::Internal(format!(
        "rollup read: {what}"
    )))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| shape(&format!("no column `{name}`")))
}

fn strings(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    Ok(cast(column(batch, name)?, &DataType::Utf8)
        .map_err(datafusion::error::DataFusionError::from)?)
}

fn ints(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    Ok(cast(column(batch, name)?, &DataType::Int64)
        .map_err(datafusion::error::DataFusionError::from)?)
}

impl Index {
    /// Numbers the units of `batches` (the rollup's rows, column `unit_id`).
    pub(crate) fn new(batches: &[RecordBatch]) -> Result<Self> {
        let mut units: HashMap<Box<str>, u32> = HashMap::new();
        let mut rows = Vec::with_capacity(batches.len());
        for batch in batches {
            let ids = strings(batch, "unit_id")?;
            let ids = ids.as_string::<i32>();
            let mut numbers = Vec::with_capacity(ids.len());
            for i in 0..ids.len() {
                if ids.is_null(i) {
                    numbers.push(NONE);
                    continue;
                }
                let id = ids.value(i);
                let n = match units.get(id) {
                    Some(&n) => n,
                    None => {
                        let n = u32::try_from(units.len())
                            .ok()
                            .filter(|&n| n != NONE)
                            .ok_or_else(|| shape("more units than numbers"))?;
                        units.insert(id.into(), n);
                        n
                    }
                };
                numbers.push(n);
            }
            rows.push(numbers);
        }
        Ok(Self { units, rows })
    }
}

/// One look's units as stage 2 reads them (the `units` table), by the
/// rollup's unit numbers.
struct LookUnits {
    /// Per rollup unit: the look's row of it plus one, 0 when not the look's.
    row: Vec<u32>,
    uidx: Vec<i64>,
    lo: Vec<i64>,
    first_ts: Vec<i64>,
    /// Index into `variants`.
    variant: Vec<usize>,
    variants: Vec<String>,
}

impl LookUnits {
    /// From `units` (columns `unit_id`, `variant`, `uidx`, `lo`,
    /// `first_ts`): the units with rows in the rollup.
    fn new(index: &Index, units: &[RecordBatch]) -> Result<Self> {
        let mut me = Self {
            row: vec![0; index.units.len()],
            uidx: Vec::new(),
            lo: Vec::new(),
            first_ts: Vec::new(),
            variant: Vec::new(),
            variants: Vec::new(),
        };
        for batch in units {
            let (ids, variants) = (strings(batch, "unit_id")?, strings(batch, "variant")?);
            let (ids, variants) = (ids.as_string::<i32>(), variants.as_string::<i32>());
            let (uidx, lo, first) = (
                ints(batch, "uidx")?,
                ints(batch, "lo")?,
                ints(batch, "first_ts")?,
            );
            let (uidx, lo, first) = (
                uidx.as_primitive::<Int64Type>(),
                lo.as_primitive::<Int64Type>(),
                first.as_primitive::<Int64Type>(),
            );
            for i in 0..batch.num_rows() {
                if ids.is_null(i) || variants.is_null(i) {
                    continue;
                }
                // A unit without rollup rows has no events in any window.
                let Some(&n) = index.units.get(ids.value(i)) else {
                    continue;
                };
                let v = variants.value(i);
                let v = match me.variants.iter().position(|x| x == v) {
                    Some(p) => p,
                    None => {
                        me.variants.push(v.to_string());
                        me.variants.len() - 1
                    }
                };
                me.uidx.push(uidx.value(i));
                me.lo.push(lo.value(i));
                me.first_ts.push(first.value(i));
                me.variant.push(v);
                me.row[n as usize] = me.uidx.len() as u32;
            }
        }
        Ok(me)
    }
}

/// Whether a rollup segment starting at `seg` lies in window `w` of a unit
/// whose event window starts at `lo` and whose first exposure is at
/// `first_ts`: every window bound is a cut point, so a segment starting
/// inside a window lies inside it.
pub(crate) fn segment_in(w: Window, seg: i64, lo: i64, first_ts: i64, b: &Bounds) -> bool {
    match w {
        Window::Analysis => seg >= lo && seg < b.end,
        Window::Pre => seg >= b.pre_start.unwrap_or(b.start).min(b.start) && seg < b.start,
        Window::Early => seg >= lo && seg < first_ts + b.novelty && seg < b.end,
        Window::Late => seg >= lo && seg >= first_ts + b.novelty && seg < b.end,
    }
}

/// A quantile metric's values from a rollup, per variant: the values of
/// each unit together, and how many each unit gave (units with none left
/// out), as the engine's SQL form gathers them.
pub(crate) type VariantValues = Vec<(String, Vec<f64>, Vec<usize>)>;

/// What one look reads of a rollup.
pub(crate) struct Stage2 {
    /// `unit_parts`: `uidx` and each part `p{i}` (0 when no segment
    /// matched: the values stage 3 reads after its zero fill; a values
    /// part is NULL, its values come with `values`).
    pub parts: RecordBatch,
    /// Per quantile metric (by key), its values.
    pub values: Vec<(String, VariantValues)>,
}

/// Stage 2 of one look from the rollup `batches` (numbered by `index`):
/// `parts` read from the rollup columns `cols` (one per part), the values
/// of each `(metric, column)` of `quantiles`, for the units of `units`
/// (see [`LookUnits::new`]) as of bounds `b`.
pub(crate) fn stage2(
    index: &Index,
    batches: &[RecordBatch],
    parts: &[Part],
    cols: &[String],
    quantiles: &[(String, String)],
    units: &[RecordBatch],
    b: &Bounds,
) -> Result<Stage2> {
    let look = LookUnits::new(index, units)?;
    let n = look.uidx.len();
    enum Acc {
        Int(Vec<i64>),
        Float(Vec<f64>),
        Null,
    }
    enum Col<'a> {
        Int(&'a Int64Array),
        Float(&'a Float64Array),
    }
    let mut accs: Vec<Acc> = parts
        .iter()
        .map(|p| match p.agg {
            Agg::Count => Acc::Int(vec![0; n]),
            Agg::Sum => Acc::Float(vec![0.0; n]),
            Agg::Values => Acc::Null,
        })
        .collect();
    let mut lists: Vec<Vec<Vec<f64>>> = quantiles.iter().map(|_| vec![Vec::new(); n]).collect();
    for (batch, numbers) in batches.iter().zip(&index.rows) {
        let seg = ints(batch, "seg")?;
        let seg = seg.as_primitive::<Int64Type>();
        // Each part's column, read as its aggregate wrote it.
        let mut owned = Vec::with_capacity(parts.len());
        for (p, c) in parts.iter().zip(cols) {
            owned.push(match p.agg {
                Agg::Count => Some(ints(batch, c)?),
                Agg::Sum => Some(
                    cast(column(batch, c)?, &DataType::Float64)
                        .map_err(datafusion::error::DataFusionError::from)?,
                ),
                Agg::Values => None,
            });
        }
        let part_cols: Vec<Option<Col>> = owned
            .iter()
            .map(|c| {
                c.as_ref().map(|c| match c.data_type() {
                    DataType::Int64 => Col::Int(c.as_primitive::<Int64Type>()),
                    _ => Col::Float(c.as_primitive::<Float64Type>()),
                })
            })
            .collect();
        // Each quantile's lists: offsets and the values, as doubles.
        let mut value_cols = Vec::with_capacity(quantiles.len());
        for (_, c) in quantiles {
            let list = column(batch, c)?
                .as_list_opt::<i32>()
                .ok_or_else(|| shape(&format!("column `{c}` is not a list")))?;
            let values = cast(list.values(), &DataType::Float64)
                .map_err(datafusion::error::DataFusionError::from)?;
            value_cols.push((list.clone(), values));
        }
        for (i, &u) in numbers.iter().enumerate() {
            if u == NONE || seg.is_null(i) {
                continue;
            }
            let r = look.row[u as usize];
            if r == 0 {
                continue;
            }
            let r = r as usize - 1;
            let (s, lo, first) = (seg.value(i), look.lo[r], look.first_ts[r]);
            for ((p, acc), col) in parts.iter().zip(&mut accs).zip(&part_cols) {
                let Some(col) = col else { continue };
                if !segment_in(p.window, s, lo, first, b) {
                    continue;
                }
                match (acc, col) {
                    (Acc::Int(a), Col::Int(c)) if c.is_valid(i) => a[r] += c.value(i),
                    (Acc::Float(a), Col::Float(c)) if c.is_valid(i) => a[r] += c.value(i),
                    _ => {}
                }
            }
            if !value_cols.is_empty() && segment_in(Window::Analysis, s, lo, first, b) {
                for ((list, values), out) in value_cols.iter().zip(&mut lists) {
                    if list.is_null(i) {
                        continue;
                    }
                    let values = values.as_primitive::<Float64Type>();
                    let (from, to) = (
                        list.value_offsets()[i] as usize,
                        list.value_offsets()[i + 1] as usize,
                    );
                    out[r].extend(
                        (from..to)
                            .filter(|&j| values.is_valid(j))
                            .map(|j| values.value(j)),
                    );
                }
            }
        }
    }
    let mut fields = vec![Field::new("uidx", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(look.uidx.clone()))];
    for (i, acc) in accs.into_iter().enumerate() {
        let (t, c): (DataType, ArrayRef) = match acc {
            Acc::Int(a) => (DataType::Int64, Arc::new(Int64Array::from(a))),
            Acc::Float(a) => (DataType::Float64, Arc::new(Float64Array::from(a))),
            Acc::Null => (DataType::Float64, Arc::new(Float64Array::new_null(n))),
        };
        fields.push(Field::new(format!("p{i}"), t, true));
        columns.push(c);
    }
    let parts = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(datafusion::error::DataFusionError::from)?;
    let values = quantiles
        .iter()
        .zip(lists)
        .map(|((metric, _), per_unit)| {
            let mut out: VariantValues = look
                .variants
                .iter()
                .map(|v| (v.clone(), Vec::new(), Vec::new()))
                .collect();
            for (r, v) in per_unit.into_iter().enumerate() {
                if v.is_empty() {
                    continue;
                }
                let (_, values, sizes) = &mut out[look.variant[r]];
                sizes.push(v.len());
                values.extend(v);
            }
            (metric.clone(), out)
        })
        .collect();
    Ok(Stage2 { parts, values })
}
