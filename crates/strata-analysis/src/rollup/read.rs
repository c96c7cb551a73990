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

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::HashMap;

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

/// Column `name` of `batch` as 64-bit integers.
pub(crate) fn ints(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    Ok(cast(column(batch, name)?, &DataType::Int64)
        .map_err(datafusion::error::DataFusionError::from)?)
}

/// A string column read in place: string views (as the engine reads
/// Parquet) are not copied into another layout first.
pub(crate) enum Strings<'a> {
    View(&'a datafusion::arrow::array::StringViewArray),
    Plain(StringArray),
}

impl<'a> Strings<'a> {
    pub(crate) fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let c = column(batch, name)?;
        Ok(match c.data_type() {
            DataType::Utf8View => Strings::View(c.as_string_view()),
            _ => Strings::Plain(
                cast(c, &DataType::Utf8)
                    .map_err(datafusion::error::DataFusionError::from)?
                    .as_string::<i32>()
                    .clone(),
            ),
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Plain(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

impl Index {
    /// Numbers the units of `batches` (the rollup's rows, column `unit_id`)
    /// in the order of their ids. Each day's rows are in that order too
    /// (`plan::rollup_day_sql`), so a look reading a day reads its units'
    /// numbers, and with [`LookUnits`] its accumulators, in increasing
    /// order: a sweep through memory rather than a jump per row.
    pub(crate) fn new(batches: &[RecordBatch]) -> Result<Self> {
        let mut units: HashMap<Box<str>, u32> = HashMap::default();
        let mut rows = Vec::with_capacity(batches.len());
        for batch in batches {
            let ids = Strings::of(batch, "unit_id")?;
            let mut numbers = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let Some(id) = ids.get(i) else {
                    numbers.push(NONE);
                    continue;
                };
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
        // Renumbered in the ids' order.
        let mut ids: Vec<(&str, u32)> = units.iter().map(|(id, &n)| (&**id, n)).collect();
        ids.sort_unstable();
        let mut renumber = vec![NONE; ids.len()];
        for (to, &(_, from)) in ids.iter().enumerate() {
            renumber[from as usize] = to as u32;
        }
        for numbers in &mut rows {
            for n in numbers.iter_mut().filter(|n| **n != NONE) {
                *n = renumber[*n as usize];
            }
        }
        for n in units.values_mut() {
            *n = renumber[*n as usize];
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
    /// `first_ts`): the units with rows in the rollup, in the order of
    /// their numbers in `index`.
    fn new(index: &Index, units: &[RecordBatch]) -> Result<Self> {
        let mut variants: Vec<String> = Vec::new();
        // (number, uidx, lo, first_ts, variant)
        let mut found: Vec<(u32, i64, i64, i64, usize)> = Vec::new();
        for batch in units {
            let (ids, names) = (
                Strings::of(batch, "unit_id")?,
                Strings::of(batch, "variant")?,
            );
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
                let (Some(id), Some(v)) = (ids.get(i), names.get(i)) else {
                    continue;
                };
                // A unit without rollup rows has no events in any window.
                let Some(&n) = index.units.get(id) else {
                    continue;
                };
                let v = match variants.iter().position(|x| x == v) {
                    Some(p) => p,
                    None => {
                        variants.push(v.to_string());
                        variants.len() - 1
                    }
                };
                found.push((n, uidx.value(i), lo.value(i), first.value(i), v));
            }
        }
        found.sort_unstable_by_key(|f| f.0);
        let mut me = Self {
            row: vec![0; index.units.len()],
            uidx: Vec::with_capacity(found.len()),
            lo: Vec::with_capacity(found.len()),
            first_ts: Vec::with_capacity(found.len()),
            variant: Vec::with_capacity(found.len()),
            variants,
        };
        for (n, uidx, lo, first, v) in found {
            me.uidx.push(uidx);
            me.lo.push(lo);
            me.first_ts.push(first);
            me.variant.push(v);
            me.row[n as usize] = me.uidx.len() as u32;
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

/// Stage 2 of one look from the rollup of `view`: `parts` read from the
/// view's columns of them, and the values of each of its quantile metrics,
/// for the units of `units` (see [`LookUnits::new`]) as of bounds `b`.
pub(crate) fn stage2(
    view: &super::View,
    parts: &[Part],
    units: &[RecordBatch],
    b: &Bounds,
) -> Result<Stage2> {
    let (index, batches, cols, quantiles) = (&*view.index, &view.rows, &view.parts, &view.values);
    let look = LookUnits::new(index, units)?;
    let n = look.uidx.len();
    // The accumulators are row-major, one row per unit of the look: a
    // rollup row adds to its unit's parts side by side, in one or two
    // cache lines, where one array per part would touch a line per part.
    // Rows and look units both go in the order of the units' numbers
    // ([`Index::new`]), so each day of the rollup is one sweep.
    const WINDOWS: [Window; 4] = [Window::Analysis, Window::Pre, Window::Early, Window::Late];
    let bit = |w: Window| 1u8 << WINDOWS.iter().position(|&x| x == w).unwrap_or(0);
    // Per part: its accumulator (counts or sums) and slot in that row.
    let (mut n_int, mut n_float) = (0, 0);
    let slots: Vec<Option<(bool, usize)>> = parts
        .iter()
        .map(|p| match p.agg {
            Agg::Count => {
                n_int += 1;
                Some((true, n_int - 1))
            }
            Agg::Sum => {
                n_float += 1;
                Some((false, n_float - 1))
            }
            Agg::Values => None,
        })
        .collect();
    let mut int_acc = vec![0i64; n * n_int];
    let mut float_acc = vec![0f64; n * n_float];
    // Each quantile's values in the analysis window, as (look row, value)
    // in the rollup's order; grouped by unit at the end.
    let mut values: Vec<Vec<(u32, f64)>> = quantiles.values().map(|_| Vec::new()).collect();
    for (batch, numbers) in batches.iter().zip(&index.rows) {
        let seg = ints(batch, "seg")?;
        let seg = seg.as_primitive::<Int64Type>();
        // Each part's column, read as its aggregate wrote it.
        let mut int_cols = Vec::with_capacity(n_int);
        let mut float_cols = Vec::with_capacity(n_float);
        for ((p, c), slot) in parts.iter().zip(cols).zip(&slots) {
            match slot {
                Some((true, k)) => int_cols.push((bit(p.window), *k, ints(batch, c)?)),
                Some((false, k)) => float_cols.push((
                    bit(p.window),
                    *k,
                    cast(column(batch, c)?, &DataType::Float64)
                        .map_err(datafusion::error::DataFusionError::from)?,
                )),
                None => {}
            }
        }
        let int_cols: Vec<(u8, usize, &Int64Array)> = int_cols
            .iter()
            .map(|(w, k, c)| (*w, *k, c.as_primitive::<Int64Type>()))
            .collect();
        let float_cols: Vec<(u8, usize, &Float64Array)> = float_cols
            .iter()
            .map(|(w, k, c)| (*w, *k, c.as_primitive::<Float64Type>()))
            .collect();
        // Each quantile's lists: offsets and the values, as doubles.
        let mut value_cols = Vec::with_capacity(quantiles.len());
        for c in quantiles.values() {
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
            let mut mask = 0u8;
            for w in WINDOWS {
                if segment_in(w, s, lo, first, b) {
                    mask |= bit(w);
                }
            }
            if mask == 0 {
                continue;
            }
            let row = &mut int_acc[r * n_int..(r + 1) * n_int];
            for &(w, k, c) in &int_cols {
                if mask & w != 0 && c.is_valid(i) {
                    row[k] += c.value(i);
                }
            }
            let row = &mut float_acc[r * n_float..(r + 1) * n_float];
            for &(w, k, c) in &float_cols {
                if mask & w != 0 && c.is_valid(i) {
                    row[k] += c.value(i);
                }
            }
            if mask & bit(Window::Analysis) != 0 {
                for ((list, vals), out) in value_cols.iter().zip(&mut values) {
                    if list.is_null(i) {
                        continue;
                    }
                    let vals = vals.as_primitive::<Float64Type>();
                    let (from, to) = (
                        list.value_offsets()[i] as usize,
                        list.value_offsets()[i + 1] as usize,
                    );
                    out.extend(
                        (from..to)
                            .filter(|&j| vals.is_valid(j))
                            .map(|j| (r as u32, vals.value(j))),
                    );
                }
            }
        }
    }
    // Back to one column per part.
    let accs: Vec<Option<ArrayRef>> = slots
        .iter()
        .map(|slot| -> Option<ArrayRef> {
            match *slot {
                Some((true, k)) => Some(Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|r| int_acc[r * n_int + k]),
                ))),
                Some((false, k)) => Some(Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|r| float_acc[r * n_float + k]),
                ))),
                None => None,
            }
        })
        .collect();
    let mut fields = vec![Field::new("uidx", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(look.uidx.clone()))];
    for (i, acc) in accs.into_iter().enumerate() {
        let c = acc.unwrap_or_else(|| Arc::new(Float64Array::new_null(n)));
        fields.push(Field::new(format!("p{i}"), c.data_type().clone(), true));
        columns.push(c);
    }
    let parts = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(datafusion::error::DataFusionError::from)?;
    let values = quantiles
        .iter()
        .zip(values)
        .map(|((metric, _), pairs)| {
            let mut out: VariantValues = look
                .variants
                .iter()
                .map(|v| (v.clone(), Vec::new(), Vec::new()))
                .collect();
            // Grouped by unit, in the units' order, each unit's values in
            // the rollup's order: a counting sort, stable.
            let mut start = vec![0usize; n + 1];
            for &(r, _) in &pairs {
                start[r as usize + 1] += 1;
            }
            for r in 0..n {
                start[r + 1] += start[r];
            }
            let mut next = start.clone();
            let mut sorted = vec![0f64; pairs.len()];
            for (r, x) in pairs {
                sorted[next[r as usize]] = x;
                next[r as usize] += 1;
            }
            for r in 0..n {
                let unit = &sorted[start[r]..start[r + 1]];
                if unit.is_empty() {
                    continue;
                }
                let (_, values, sizes) = &mut out[look.variant[r]];
                sizes.push(unit.len());
                values.extend_from_slice(unit);
            }
            (metric.clone(), out)
        })
        .collect();
    Ok(Stage2 { parts, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewArray;

    fn ids(batch: &[Option<&str>]) -> RecordBatch {
        let a: ArrayRef = Arc::new(StringViewArray::from(batch.to_vec()));
        RecordBatch::try_from_iter([("unit_id", a)]).unwrap()
    }

    #[test]
    fn units_are_numbered_in_the_order_of_their_ids() {
        let index = Index::new(&[
            ids(&[Some("m"), Some("z"), None]),
            ids(&[Some("a"), Some("m"), Some("q")]),
        ])
        .unwrap();
        // a, m, q, z
        assert_eq!(index.rows, vec![vec![1, 3, NONE], vec![0, 1, 2]]);
        assert_eq!(index.units.len(), 4);
        assert_eq!(index.units.get("q"), Some(&2));
    }

    #[test]
    fn a_looks_units_are_ordered_by_their_numbers() {
        let index = Index::new(&[ids(&[Some("a"), Some("b"), Some("c")])]).unwrap();
        let col = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let units = RecordBatch::try_from_iter([
            (
                "unit_id",
                Arc::new(StringArray::from(vec!["c", "x", "a"])) as ArrayRef,
            ),
            (
                "variant",
                Arc::new(StringArray::from(vec!["t", "c", "c"])) as ArrayRef,
            ),
            ("uidx", col(vec![1, 2, 3])),
            ("lo", col(vec![10, 20, 30])),
            ("first_ts", col(vec![11, 21, 31])),
        ])
        .unwrap();
        let look = LookUnits::new(&index, &[units]).unwrap();
        // "x" has no rollup rows; "a" (number 0) comes before "c" (2).
        assert_eq!(look.uidx, vec![3, 1]);
        assert_eq!(look.lo, vec![30, 10]);
        assert_eq!(look.first_ts, vec![31, 11]);
        assert_eq!(look.row, vec![1, 0, 2]);
        assert_eq!(look.variants, vec!["t".to_string(), "c".to_string()]);
        assert_eq!(look.variant, vec![1, 0]);
    }
}
