//! `strata_parts`: one aggregate function that computes every per-unit part
//! of the plan in a single pass over the events.
//!
//! Stage 2a as plain SQL has one `COUNT(*) FILTER (…)` or `SUM(value)
//! FILTER (…)` per part ([`crate::plan::unit_parts_sql`] with
//! `fused = false`): each evaluates its condition over every event and keeps
//! a column of per-unit values, so an event costs one condition and one
//! random access into a million-entry column per part. This aggregate reads
//! the event's type, time and value once, finds the parts it belongs to
//! with a few integer comparisons, and adds into one row of per-unit values
//! per unit (`docs/performance.md`, *Fused per-unit parts*). It computes
//! exactly what the SQL does and runs inside the same DataFusion plan (scan,
//! join, grouping, spilling and merging of partial states are DataFusion's);
//! the SQL form stays the portable reference, and the tests check that both
//! agree.
//!
//! It applies when every part's filter is on the event type alone (value or
//! property predicates keep the SQL form) and there are at most
//! [`MAX_PARTS`] parts.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::metrics::Filter;
use crate::plan::{Agg, Part, Window};

/// The SQL name of the aggregate.
pub(crate) const NAME: &str = "strata_parts";

/// At most this many parts (one bit each in a `u64` mask).
pub(crate) const MAX_PARTS: usize = 64;

/// What the aggregate needs to know of one part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PartSpec {
    sum: bool,
    /// Event types the part counts; `None`: every type.
    types: Option<Vec<String>>,
    needs_value: bool,
    window: Window,
}

/// `strata_parts(type, ts, lo, first_ts, value)`: per group, a struct with
/// one field `p{i}` per part (`BIGINT` for counts, `DOUBLE` for sums), the
/// same values as the part's `FILTER` aggregate in
/// [`crate::plan::unit_parts_sql`] (a sum over no value is 0 here and NULL
/// there; stage 2b zero-fills both alike).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartsUdaf {
    parts: Vec<PartSpec>,
    /// Experiment start (ns): the pre-period is `ts < start`.
    start: i64,
    /// Novelty window length (ns) after first exposure.
    novelty: i64,
    signature: Signature,
}

/// Whether a filter is on the event type alone.
fn type_only(f: &Filter) -> bool {
    f.value.is_none() && f.properties.is_empty()
}

impl PartsUdaf {
    /// The aggregate for `parts`, or `None` when some part needs the SQL
    /// form (a value or property predicate, or more than [`MAX_PARTS`]).
    pub(crate) fn new(parts: &[Part], start: i64, novelty: i64) -> Option<Self> {
        if parts.is_empty() || parts.len() > MAX_PARTS {
            return None;
        }
        let parts = parts
            .iter()
            .map(|p| {
                type_only(&p.filter).then(|| PartSpec {
                    sum: p.agg == Agg::Sum,
                    types: p
                        .filter
                        .event_type
                        .as_ref()
                        .map(|t| t.names().into_iter().map(str::to_string).collect()),
                    needs_value: p.needs_value,
                    window: p.window,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            parts,
            start,
            novelty,
            signature: Signature::any(5, Volatility::Immutable),
        })
    }

    /// The fields of the result struct: `p{i}`, `BIGINT` or `DOUBLE`.
    fn fields(&self) -> Fields {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = if p.sum {
                    DataType::Float64
                } else {
                    DataType::Int64
                };
                Field::new(format!("p{i}"), t, false)
            })
            .collect()
    }

    fn accumulator_state(&self) -> PartsAccumulator {
        let mut types: Vec<(String, u64)> = Vec::new();
        let (mut untyped, mut sum, mut value) = (0u64, 0u64, 0u64);
        let mut windows = [0u64; 4];
        for (i, p) in self.parts.iter().enumerate() {
            let bit = 1u64 << i;
            match &p.types {
                None => untyped |= bit,
                Some(names) => {
                    for n in names {
                        match types.iter_mut().find(|(t, _)| t == n) {
                            Some((_, m)) => *m |= bit,
                            None => types.push((n.clone(), bit)),
                        }
                    }
                }
            }
            if p.sum {
                sum |= bit;
            }
            if p.needs_value {
                value |= bit;
            }
            windows[window_slot(p.window)] |= bit;
        }
        PartsAccumulator {
            n: self.parts.len(),
            fields: self.fields(),
            start: self.start,
            novelty: self.novelty,
            types,
            untyped,
            sum,
            value,
            windows,
            values: Vec::new(),
        }
    }
}

fn window_slot(w: Window) -> usize {
    match w {
        Window::Analysis => 0,
        Window::Pre => 1,
        Window::Early => 2,
        Window::Late => 3,
    }
}

impl AggregateUDFImpl for PartsUdaf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(self.accumulator_state())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok((0..self.parts.len())
            .map(|i| {
                Arc::new(Field::new(
                    format_state_name(args.name, &format!("p{i}")),
                    DataType::Float64,
                    false,
                ))
            })
            .collect())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.accumulator_state()))
    }
}

/// Per-group part values, one row of `n` values per group (counts are held
/// as `f64`, exact below 2^53).
#[derive(Debug, Clone)]
struct PartsAccumulator {
    n: usize,
    /// The fields of the result struct ([`PartsUdaf::fields`]).
    fields: Fields,
    start: i64,
    novelty: i64,
    /// Parts counting each named type.
    types: Vec<(String, u64)>,
    /// Parts with no type filter.
    untyped: u64,
    /// Parts that sum `value` (the others count).
    sum: u64,
    /// Parts that only take events with a value.
    value: u64,
    /// Parts per window: analysis, pre, early, late.
    windows: [u64; 4],
    values: Vec<f64>,
}

/// The parts whose type filter an event's type passes, per row.
fn type_masks(acc: &PartsAccumulator, types: &ArrayRef) -> Result<Vec<u64>> {
    let n = types.len();
    let mut out = Vec::with_capacity(n);
    match types.data_type() {
        DataType::Utf8View => {
            // A string of at most 12 bytes is stored whole in its 16-byte
            // view, so comparing views compares the strings.
            let a = types.as_string_view();
            let inline: Vec<(u128, u64)> = acc
                .types
                .iter()
                .filter(|(t, _)| t.len() <= 12)
                .map(|(t, m)| (inline_view(t.as_bytes()), m | acc.untyped))
                .collect();
            let views = a.views();
            for i in 0..n {
                if a.is_null(i) {
                    out.push(acc.untyped);
                    continue;
                }
                let v = views[i];
                if (v as u32) <= 12 {
                    out.push(
                        inline
                            .iter()
                            .find(|(w, _)| *w == v)
                            .map_or(acc.untyped, |(_, m)| *m),
                    );
                } else {
                    let s = a.value(i);
                    out.push(
                        acc.types
                            .iter()
                            .find(|(t, _)| t == s)
                            .map_or(acc.untyped, |(_, m)| m | acc.untyped),
                    );
                }
            }
        }
        // Other string types are cast to views first (16 bytes per row).
        _ => return type_masks(acc, &cast(types, &DataType::Utf8View)?),
    }
    Ok(out)
}

/// The view of a string of at most 12 bytes (length, then the bytes).
fn inline_view(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf[4..4 + bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(buf)
}

fn as_i64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn as_f64(a: &ArrayRef) -> Result<Float64Array> {
    Ok(cast(a, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

impl PartsAccumulator {
    /// The same accumulator with no groups.
    fn fresh(&self) -> Self {
        Self {
            fields: self.fields.clone(),
            types: self.types.clone(),
            values: Vec::new(),
            ..*self
        }
    }

    fn grow(&mut self, groups: usize) {
        if self.values.len() < groups * self.n {
            self.values.resize(groups * self.n, 0.0);
        }
    }

    /// Takes the rows of the groups `emit_to` names.
    fn take(&mut self, emit_to: EmitTo) -> Vec<f64> {
        match emit_to {
            EmitTo::All => std::mem::take(&mut self.values),
            EmitTo::First(k) => {
                let rest = self.values.split_off((k * self.n).min(self.values.len()));
                std::mem::replace(&mut self.values, rest)
            }
        }
    }

    fn column(&self, rows: &[f64], i: usize, as_count: bool) -> ArrayRef {
        let it = rows.iter().skip(i).step_by(self.n).copied();
        if as_count {
            Arc::new(it.map(|x| x as i64).collect::<Int64Array>())
        } else {
            Arc::new(it.collect::<Float64Array>())
        }
    }
}

impl GroupsAccumulator for PartsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [types, ts, lo, first, value] = values else {
            return exec_err!("{NAME} takes 5 arguments, got {}", values.len());
        };
        self.grow(total_num_groups);
        let masks = type_masks(self, types)?;
        let (ts, lo, first, value) = (as_i64(ts)?, as_i64(lo)?, as_i64(first)?, as_f64(value)?);
        let [analysis, pre, early, late] = self.windows;
        for (row, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            let mut m = masks[row];
            if m == 0 || ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            let mut w = 0;
            if t < self.start {
                w |= pre;
            }
            if lo.is_valid(row) && t >= lo.value(row) {
                w |= analysis;
                if first.is_valid(row) {
                    if t < first.value(row).saturating_add(self.novelty) {
                        w |= early;
                    } else {
                        w |= late;
                    }
                }
            }
            m &= w;
            let v = value.is_valid(row).then(|| value.value(row));
            if v.is_none() {
                m &= !self.value;
            }
            let base = g * self.n;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                if self.sum >> j & 1 == 1 {
                    self.values[base + j] += v.unwrap_or(0.0);
                } else {
                    self.values[base + j] += 1.0;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let rows = self.take(emit_to);
        let columns = (0..self.n)
            .map(|i| self.column(&rows, i, self.sum >> i & 1 == 0))
            .collect();
        Ok(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let rows = self.take(emit_to);
        Ok((0..self.n).map(|i| self.column(&rows, i, false)).collect())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        if values.len() != self.n {
            return exec_err!(
                "{NAME} state has {} columns, expected {}",
                values.len(),
                self.n
            );
        }
        self.grow(total_num_groups);
        let columns = values.iter().map(as_f64).collect::<Result<Vec<_>>>()?;
        for (j, c) in columns.iter().enumerate() {
            for (row, &g) in group_indices.iter().enumerate() {
                if c.is_valid(row) {
                    self.values[g * self.n + j] += c.value(row);
                }
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row is a group of its own.
        let rows = values.first().map_or(0, |v| v.len());
        let mut one = self.fresh();
        let groups: Vec<usize> = (0..rows).collect();
        one.update_batch(values, &groups, opt_filter, rows)?;
        one.state(EmitTo::All)
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

/// The row-at-a-time form DataFusion asks for where it does not group
/// (one group, index 0).
#[derive(Debug)]
struct OneGroup(PartsAccumulator);

impl OneGroup {
    /// The group's values, left in place (DataFusion may ask more than once).
    fn snapshot(&mut self) -> PartsAccumulator {
        self.0.grow(1);
        self.0.clone()
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.0.update_batch(values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let a = GroupsAccumulator::evaluate(&mut self.snapshot(), EmitTo::All)?;
        ScalarValue::try_from_array(&a, 0)
    }

    fn size(&self) -> usize {
        GroupsAccumulator::size(&self.0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let cols = GroupsAccumulator::state(&mut self.snapshot(), EmitTo::All)?;
        cols.iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |v| v.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }
}

/// Replaces the struct column `parts` of stage 2a's rows by its fields
/// (`p0`, `p1`, …), the shape of the SQL form.
pub(crate) fn flatten(
    batch: &datafusion::arrow::array::RecordBatch,
) -> Result<datafusion::arrow::array::RecordBatch> {
    use datafusion::arrow::datatypes::Schema;
    let mut fields: Vec<FieldRef> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match c.as_struct_opt() {
            Some(s) if f.name() == "parts" => {
                fields.extend(s.fields().iter().cloned());
                columns.extend(s.columns().iter().cloned());
            }
            _ => {
                fields.push(f.clone());
                columns.push(c.clone());
            }
        }
    }
    Ok(datafusion::arrow::array::RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, StringViewArray};

    fn part(agg: Agg, filter: &str, needs_value: bool, window: Window) -> Part {
        Part {
            agg,
            filter: serde_json::from_str(filter).unwrap(),
            needs_value,
            window,
        }
    }

    fn parts() -> Vec<Part> {
        vec![
            part(
                Agg::Count,
                r#"{"type": "purchase"}"#,
                false,
                Window::Analysis,
            ),
            part(Agg::Sum, r#"{"type": "purchase"}"#, false, Window::Analysis),
            part(
                Agg::Count,
                r#"{"type": ["purchase", "refund"]}"#,
                false,
                Window::Pre,
            ),
            part(Agg::Count, "{}", false, Window::Early),
            part(
                Agg::Count,
                r#"{"type": "checkout_completed"}"#,
                false,
                Window::Late,
            ),
            part(Agg::Sum, r#"{"type": "purchase"}"#, true, Window::Analysis),
            part(
                Agg::Count,
                r#"{"type": "purchase"}"#,
                true,
                Window::Analysis,
            ),
        ]
    }

    const START: i64 = 1_000;
    const NOVELTY: i64 = 100;

    /// Rows (group, type, ts, lo, first_ts, value).
    type Row = (
        usize,
        Option<&'static str>,
        i64,
        Option<i64>,
        Option<i64>,
        Option<f64>,
    );

    fn rows() -> Vec<Row> {
        vec![
            (
                0,
                Some("purchase"),
                1_050,
                Some(1_000),
                Some(1_000),
                Some(10.0),
            ),
            (0, Some("purchase"), 1_150, Some(1_000), Some(1_000), None),
            (
                0,
                Some("purchase"),
                999,
                Some(1_000),
                Some(1_000),
                Some(4.0),
            ),
            (0, Some("refund"), 500, Some(1_000), Some(1_000), Some(1.0)),
            (
                1,
                Some("checkout_completed"),
                1_300,
                Some(1_200),
                Some(1_205),
                Some(2.0),
            ),
            (
                1,
                Some("checkout_completed"),
                1_305,
                Some(1_200),
                Some(1_205),
                Some(2.0),
            ),
            (1, Some("page_view"), 1_250, Some(1_200), Some(1_205), None),
            (1, None, 1_250, Some(1_200), Some(1_205), None),
            (
                1,
                Some("purchase"),
                1_199,
                Some(1_200),
                Some(1_205),
                Some(9.0),
            ),
            (2, Some("purchase"), 1_100, None, None, Some(3.0)),
            (
                2,
                Some("purchase"),
                1_100,
                Some(1_000),
                Some(1_000),
                Some(-1.5),
            ),
        ]
    }

    /// Each part's value per group, straight from the SQL conditions of
    /// `plan::unit_parts_sql`.
    fn expected(parts: &[Part], rows: &[Row], groups: usize) -> Vec<Vec<f64>> {
        let mut out = vec![vec![0.0; parts.len()]; groups];
        for &(g, t, ts, lo, first, v) in rows {
            for (j, p) in parts.iter().enumerate() {
                let after_lo = lo.is_some_and(|lo| ts >= lo);
                let in_window = match p.window {
                    Window::Analysis => after_lo,
                    Window::Pre => ts < START,
                    Window::Early => after_lo && first.is_some_and(|f| ts < f + NOVELTY),
                    Window::Late => after_lo && first.is_some_and(|f| ts >= f + NOVELTY),
                };
                let type_ok = match &p.filter.event_type {
                    None => true,
                    Some(names) => t.is_some_and(|t| names.names().contains(&t)),
                };
                if !in_window || !type_ok || (p.needs_value && v.is_none()) {
                    continue;
                }
                out[g][j] += match p.agg {
                    Agg::Count => 1.0,
                    Agg::Sum => v.unwrap_or(0.0),
                };
            }
        }
        out
    }

    fn arrays(rows: &[Row], view: bool) -> (Vec<ArrayRef>, Vec<usize>) {
        let types: ArrayRef = if view {
            Arc::new(rows.iter().map(|r| r.1).collect::<StringViewArray>())
        } else {
            Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>())
        };
        let values = vec![
            types,
            Arc::new(rows.iter().map(|r| Some(r.2)).collect::<Int64Array>()) as ArrayRef,
            Arc::new(rows.iter().map(|r| r.3).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.4).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.5).collect::<Float64Array>()),
        ];
        (values, rows.iter().map(|r| r.0).collect())
    }

    fn evaluated(a: &ArrayRef) -> Vec<Vec<f64>> {
        let s = a.as_struct();
        let cols: Vec<Float64Array> = s.columns().iter().map(|c| as_f64(c).unwrap()).collect();
        (0..s.len())
            .map(|g| cols.iter().map(|c| c.value(g)).collect())
            .collect()
    }

    fn udaf() -> PartsUdaf {
        PartsUdaf::new(&parts(), START, NOVELTY).unwrap()
    }

    #[test]
    fn parts_follow_the_sql_conditions() {
        let want = expected(&parts(), &rows(), 3);
        // Spot checks of the reference itself.
        assert_eq!(want[0][..3], [2.0, 10.0, 2.0]);
        assert_eq!(want[1][3..5], [3.0, 1.0]);
        assert_eq!(want[0][5..], [10.0, 1.0]);
        for view in [true, false] {
            let mut acc = udaf().accumulator_state();
            let (values, groups) = arrays(&rows(), view);
            acc.update_batch(&values, &groups, None, 3).unwrap();
            let got = evaluated(&acc.evaluate(EmitTo::All).unwrap());
            assert_eq!(got, want, "view={view}");
        }
    }

    #[test]
    fn filtered_rows_are_skipped() {
        let mut acc = udaf().accumulator_state();
        let (values, groups) = arrays(&rows(), true);
        let keep: BooleanArray = (0..rows().len()).map(|i| Some(i % 2 == 0)).collect();
        acc.update_batch(&values, &groups, Some(&keep), 3).unwrap();
        let kept: Vec<Row> = rows().into_iter().step_by(2).collect();
        let got = evaluated(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(got, expected(&parts(), &kept, 3));
    }

    #[test]
    fn partial_states_merge_to_the_whole() {
        let all = rows();
        let (head, tail) = all.split_at(4);
        let mut merged = udaf().accumulator_state();
        for chunk in [head, tail] {
            let mut acc = udaf().accumulator_state();
            let (values, groups) = arrays(chunk, true);
            acc.update_batch(&values, &groups, None, 3).unwrap();
            let state = acc.state(EmitTo::All).unwrap();
            merged.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        }
        // Rows turned into states one by one merge to the same.
        let mut per_row = udaf().accumulator_state();
        let (values, groups) = arrays(&all, true);
        let state = per_row.convert_to_state(&values, None).unwrap();
        per_row.merge_batch(&state, &groups, 3).unwrap();
        let want = expected(&parts(), &all, 3);
        // Emitting the first group shifts the others down.
        let first = evaluated(&merged.evaluate(EmitTo::First(1)).unwrap());
        assert_eq!(first, want[..1]);
        assert_eq!(evaluated(&merged.evaluate(EmitTo::All).unwrap()), want[1..]);
        assert_eq!(evaluated(&per_row.evaluate(EmitTo::All).unwrap()), want);
    }

    #[test]
    fn the_row_accumulator_agrees_and_can_be_read_twice() {
        let (values, _) = arrays(&rows(), true);
        let mut one = OneGroup(udaf().accumulator_state());
        one.update_batch(&values[..]).unwrap();
        let state: Vec<ArrayRef> = one
            .state()
            .unwrap()
            .iter()
            .map(|v| v.to_array().unwrap())
            .collect();
        let mut merged = OneGroup(udaf().accumulator_state());
        merged.merge_batch(&state).unwrap();
        let first = merged.evaluate().unwrap();
        assert_eq!(merged.evaluate().unwrap(), first);
        let all_in_one: Vec<Row> = rows()
            .into_iter()
            .map(|r| (0, r.1, r.2, r.3, r.4, r.5))
            .collect();
        let want = expected(&parts(), &all_in_one, 1);
        assert_eq!(evaluated(&first.to_array().unwrap()), want);
    }

    #[test]
    fn counts_are_integers_and_sums_doubles() {
        let mut acc = udaf().accumulator_state();
        let (values, groups) = arrays(&rows(), true);
        acc.update_batch(&values, &groups, None, 3).unwrap();
        let a = acc.evaluate(EmitTo::All).unwrap();
        let types: Vec<DataType> = a
            .as_struct()
            .columns()
            .iter()
            .map(|c| c.data_type().clone())
            .collect();
        assert_eq!(types[0], DataType::Int64);
        assert_eq!(types[1], DataType::Float64);
        assert_eq!(udaf().return_type(&[]).unwrap(), a.data_type().clone());
    }

    #[test]
    fn value_and_property_filters_keep_the_sql_form() {
        let mut p = parts();
        assert!(PartsUdaf::new(&p, START, NOVELTY).is_some());
        p.push(part(
            Agg::Count,
            r#"{"type": "purchase", "value": {"gt": 0}}"#,
            false,
            Window::Analysis,
        ));
        assert!(PartsUdaf::new(&p, START, NOVELTY).is_none());
        p.pop();
        p.push(part(
            Agg::Count,
            r#"{"properties": {"country": "US"}}"#,
            false,
            Window::Analysis,
        ));
        assert!(PartsUdaf::new(&p, START, NOVELTY).is_none());
        assert!(PartsUdaf::new(&[], START, NOVELTY).is_none());
        let many = vec![parts()[0].clone(); MAX_PARTS + 1];
        assert!(PartsUdaf::new(&many, START, NOVELTY).is_none());
    }
}
