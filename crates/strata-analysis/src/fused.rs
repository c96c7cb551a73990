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
//! A values part (a quantile metric's values, [`Agg::Values`]) is a list per
//! unit, the `ARRAY_AGG` of the SQL form.
//!
//! It applies when every part's filter is on the event type alone (value or
//! property predicates keep the SQL form) and there are at most
//! [`MAX_PARTS`] parts ([`applies`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
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
    agg: Agg,
    /// Event types the part counts; `None`: every type.
    types: Option<Vec<String>>,
    needs_value: bool,
    window: Window,
}

/// `strata_parts(type, ts, lo, first_ts, value, is_bot)`: per group, a struct with
/// one field `p{i}` per part (`BIGINT` for counts, `DOUBLE` for sums, a
/// list of `DOUBLE`, NULL when empty, for values), the
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

/// Whether the aggregate can compute `parts`: at most [`MAX_PARTS`], each
/// filtered on the event type alone.
pub(crate) fn applies(parts: &[Part]) -> bool {
    parts.len() <= MAX_PARTS && parts.iter().all(|p| type_only(&p.filter))
}

impl PartsUdaf {
    /// The aggregate for `parts`, or `None` when some part needs the SQL
    /// form (a value or property predicate, or more than [`MAX_PARTS`]).
    pub(crate) fn new(parts: &[Part], start: i64, novelty: i64) -> Option<Self> {
        if parts.is_empty() || !applies(parts) {
            return None;
        }
        let parts = parts
            .iter()
            .map(|p| PartSpec {
                agg: p.agg,
                types: p
                    .filter
                    .event_type
                    .as_ref()
                    .map(|t| t.names().into_iter().map(str::to_string).collect()),
                needs_value: p.needs_value,
                window: p.window,
            })
            .collect();
        Some(Self {
            parts,
            start,
            novelty,
            signature: Signature::any(6, Volatility::Immutable),
        })
    }

    /// The fields of the result struct: `p{i}`, `BIGINT`, `DOUBLE` or a
    /// list of `DOUBLE`.
    fn fields(&self) -> Fields {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p.agg {
                Agg::Count => Field::new(format!("p{i}"), DataType::Int64, false),
                Agg::Sum => Field::new(format!("p{i}"), DataType::Float64, false),
                Agg::Values => Field::new(format!("p{i}"), list_type(), true),
            })
            .collect()
    }

    fn accumulator_state(&self) -> PartsAccumulator {
        let mut types: Vec<(String, u64)> = Vec::new();
        let (mut untyped, mut sum, mut value, mut list) = (0u64, 0u64, 0u64, 0u64);
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
            match p.agg {
                Agg::Count => {}
                Agg::Sum => sum |= bit,
                Agg::Values => list |= bit,
            }
            if p.needs_value {
                value |= bit;
            }
            windows[window_slot(p.window)] |= bit;
        }
        let inline = Arc::new(ViewTable::new(
            types
                .iter()
                .filter(|(t, _)| t.len() <= 12)
                .map(|(t, m)| (inline_view(t.as_bytes()), m | untyped)),
        ));
        PartsAccumulator {
            n: self.parts.len(),
            fields: self.fields(),
            start: self.start,
            novelty: self.novelty,
            types,
            inline,
            untyped,
            sum,
            value,
            list,
            windows,
            values: Vec::new(),
            lists: Vec::new(),
            list_bytes: 0,
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
        Ok(self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = format_state_name(args.name, &format!("p{i}"));
                Arc::new(match p.agg {
                    Agg::Values => Field::new(name, list_type(), true),
                    _ => Field::new(name, DataType::Float64, false),
                })
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
/// as `f64`, exact below 2^53), and one list per group and values part.
#[derive(Debug, Clone)]
struct PartsAccumulator {
    n: usize,
    /// The fields of the result struct ([`PartsUdaf::fields`]).
    fields: Fields,
    start: i64,
    novelty: i64,
    /// Parts counting each named type.
    types: Vec<(String, u64)>,
    /// The masks of the types of at most 12 bytes by inline view (with
    /// the untyped parts), built once.
    inline: Arc<ViewTable>,
    /// Parts with no type filter.
    untyped: u64,
    /// Parts that sum `value` (the others count).
    sum: u64,
    /// Parts that only take events with a value.
    value: u64,
    /// Values parts (lists; their slot in `values` is unused).
    list: u64,
    /// Parts per window: analysis, pre, early, late.
    windows: [u64; 4],
    values: Vec<f64>,
    /// `list.count_ones()` lists per group, in part order.
    lists: Vec<Vec<f64>>,
    /// Heap bytes of the lists' values (DataFusion asks after every batch,
    /// too often to add up a million lists each time).
    list_bytes: usize,
}

/// The type of a values part: a list of `DOUBLE`, as `ARRAY_AGG` returns.
fn list_type() -> DataType {
    DataType::new_list(DataType::Float64, true)
}

/// `lists` as a list array, NULL where a list is empty.
fn list_array<'a>(lists: impl Iterator<Item = &'a Vec<f64>> + Clone) -> ArrayRef {
    let values: Float64Array = lists.clone().flatten().copied().collect();
    let offsets = OffsetBuffer::from_lengths(lists.clone().map(Vec::len));
    let nulls = NullBuffer::from_iter(lists.map(|l| !l.is_empty()));
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        offsets,
        Arc::new(values),
        Some(nulls),
    ))
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
            let views = a.views();
            let nulls = a.nulls().filter(|n| n.null_count() > 0);
            for (i, &v) in views.iter().enumerate() {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    out.push(acc.untyped);
                } else if (v as u32) <= 12 {
                    out.push(acc.inline.get(v).unwrap_or(acc.untyped));
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

/// Masks by inline view in a table without collisions (a multiplier is
/// searched for when the table is built): a lookup is one multiply and one
/// comparison, where a scan of the list of types costs a comparison per type
/// and a mispredicted branch per row.
#[derive(Debug)]
struct ViewTable {
    /// `(view, mask)`; an empty slot holds [`EMPTY`].
    slots: Vec<(u128, u64)>,
    mul: u64,
    shift: u32,
    /// For the rare sets with no collision-free table: a list to scan.
    list: Option<Vec<(u128, u64)>>,
}

/// No inline view is all ones (its length, the low 32 bits, is at most 12).
const EMPTY: u128 = u128::MAX;

impl ViewTable {
    fn new(entries: impl Iterator<Item = (u128, u64)>) -> Self {
        let entries: Vec<(u128, u64)> = entries.collect();
        let mut size = (entries.len() * 2).next_power_of_two().max(16);
        while size <= 1 << 12 {
            let shift = 64 - size.trailing_zeros();
            for k in 0..64u64 {
                let mul = 0x9E37_79B9_7F4A_7C15u64
                    .wrapping_add(k.wrapping_mul(0x2545_F491_4F6C_DD1D))
                    | 1;
                let mut slots = vec![(EMPTY, 0); size];
                let free = entries.iter().all(|&(v, m)| {
                    let i = Self::index(v, mul, shift);
                    let ok = slots[i].0 == EMPTY;
                    slots[i] = (v, m);
                    ok
                });
                if free {
                    return Self {
                        slots,
                        mul,
                        shift,
                        list: None,
                    };
                }
            }
            size *= 2;
        }
        Self {
            slots: Vec::new(),
            mul: 0,
            shift: 0,
            list: Some(entries),
        }
    }

    fn index(v: u128, mul: u64, shift: u32) -> usize {
        let h = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        (h.wrapping_mul(mul) >> shift) as usize
    }

    fn get(&self, v: u128) -> Option<u64> {
        if let Some(list) = &self.list {
            return list.iter().find(|(w, _)| *w == v).map(|(_, m)| *m);
        }
        let (w, m) = self.slots[Self::index(v, self.mul, self.shift)];
        (w == v).then_some(m)
    }
}

/// The view of a string of at most 12 bytes (length, then the bytes).
fn inline_view(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf[4..4 + bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(buf)
}

/// A primitive column read row by row without a call per value (the
/// `Array` accessors are not inlined across crates).
struct Col<'a, T> {
    values: &'a [T],
    /// `None` when no value is null.
    nulls: Option<&'a NullBuffer>,
}

impl<T: Copy> Col<'_, T> {
    #[inline]
    fn get(&self, i: usize) -> Option<T> {
        match self.nulls {
            Some(n) if n.is_null(i) => None,
            _ => Some(self.values[i]),
        }
    }
}

fn col<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    a: &datafusion::arrow::array::PrimitiveArray<T>,
) -> Col<'_, T::Native> {
    Col {
        values: a.values(),
        nulls: a.nulls().filter(|n| n.null_count() > 0),
    }
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
            inline: self.inline.clone(),
            values: Vec::new(),
            lists: Vec::new(),
            list_bytes: 0,
            ..*self
        }
    }

    /// Number of values parts (lists per group).
    fn nl(&self) -> usize {
        self.list.count_ones() as usize
    }

    /// The list slot of part `j` (a values part) within its group.
    fn slot(&self, j: usize) -> usize {
        (self.list & ((1u64 << j) - 1)).count_ones() as usize
    }

    fn grow(&mut self, groups: usize) {
        if self.values.len() < groups * self.n {
            self.values.resize(groups * self.n, 0.0);
        }
        let nl = self.nl();
        if self.lists.len() < groups * nl {
            self.lists.resize_with(groups * nl, Vec::new);
        }
    }

    /// Appends `x` to list `k`, keeping `list_bytes`.
    fn push_value(&mut self, k: usize, x: f64) {
        self.extend_values(k, &[x]);
    }

    /// Appends `xs` to list `k`, keeping `list_bytes`.
    fn extend_values(&mut self, k: usize, xs: &[f64]) {
        let l = &mut self.lists[k];
        let before = l.capacity();
        l.extend_from_slice(xs);
        self.list_bytes += (l.capacity() - before) * std::mem::size_of::<f64>();
    }

    /// Takes the rows and lists of the groups `emit_to` names.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<f64>, Vec<Vec<f64>>) {
        let taken = match emit_to {
            EmitTo::All => (
                std::mem::take(&mut self.values),
                std::mem::take(&mut self.lists),
            ),
            EmitTo::First(k) => {
                let rest = self.values.split_off((k * self.n).min(self.values.len()));
                let rest_lists = self.lists.split_off((k * self.nl()).min(self.lists.len()));
                (
                    std::mem::replace(&mut self.values, rest),
                    std::mem::replace(&mut self.lists, rest_lists),
                )
            }
        };
        self.list_bytes = self
            .lists
            .iter()
            .map(|l| l.capacity() * std::mem::size_of::<f64>())
            .sum();
        taken
    }

    /// Every part of the taken groups: counts as `BIGINT` when `counts`,
    /// values parts as lists, the others as `DOUBLE`. The rows are read
    /// once, each value written to its column in turn (a column at a time
    /// would read every row once per part).
    fn columns(&self, (rows, lists): &(Vec<f64>, Vec<Vec<f64>>), counts: bool) -> Vec<ArrayRef> {
        let groups = rows.len() / self.n.max(1);
        let mut cols: Vec<Vec<f64>> = (0..self.n).map(|_| Vec::with_capacity(groups)).collect();
        for row in rows.chunks_exact(self.n.max(1)) {
            for (c, &x) in cols.iter_mut().zip(row) {
                c.push(x);
            }
        }
        let nl = self.nl();
        cols.into_iter()
            .enumerate()
            .map(|(i, c)| -> ArrayRef {
                if self.list >> i & 1 == 1 {
                    list_array(lists.iter().skip(self.slot(i)).step_by(nl))
                } else if counts && self.sum >> i & 1 == 0 {
                    Arc::new(c.into_iter().map(|x| x as i64).collect::<Int64Array>())
                } else {
                    Arc::new(Float64Array::from(c))
                }
            })
            .collect()
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
        let [types, ts, lo, first, value, bot] = values else {
            return exec_err!("{NAME} takes 6 arguments, got {}", values.len());
        };
        self.grow(total_num_groups);
        let mut masks = type_masks(self, types)?;
        // Rows that count nowhere: filtered out, or a bot's event (as `WHERE
        // NOT is_bot`, an unknown flag too).
        if let Some(f) = opt_filter {
            for (i, m) in masks.iter_mut().enumerate() {
                if !f.is_valid(i) || !f.value(i) {
                    *m = 0;
                }
            }
        }
        let bot = cast(bot, &DataType::Boolean)?;
        let bot = bot.as_boolean();
        if bot.true_count() > 0 || bot.null_count() > 0 {
            for (i, m) in masks.iter_mut().enumerate() {
                if !bot.is_valid(i) || bot.value(i) {
                    *m = 0;
                }
            }
        }
        let (ts, lo, first, value) = (as_i64(ts)?, as_i64(lo)?, as_i64(first)?, as_f64(value)?);
        let (ts, lo, first, value) = (col(&ts), col(&lo), col(&first), col(&value));
        let [analysis, pre, early, late] = self.windows;
        for (row, &g) in group_indices.iter().enumerate() {
            let mut m = masks[row];
            if m == 0 {
                continue;
            }
            let Some(t) = ts.get(row) else {
                continue;
            };
            let mut w = 0;
            if t < self.start {
                w |= pre;
            }
            if lo.get(row).is_some_and(|lo| t >= lo) {
                w |= analysis;
                if let Some(first) = first.get(row) {
                    if t < first.saturating_add(self.novelty) {
                        w |= early;
                    } else {
                        w |= late;
                    }
                }
            }
            m &= w;
            let v = value.get(row);
            if v.is_none() {
                m &= !self.value;
            }
            let base = g * self.n;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                if self.list >> j & 1 == 1 {
                    if let Some(x) = v {
                        self.push_value(g * self.nl() + self.slot(j), x);
                    }
                } else if self.sum >> j & 1 == 1 {
                    self.values[base + j] += v.unwrap_or(0.0);
                } else {
                    self.values[base + j] += 1.0;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        Ok(Arc::new(StructArray::try_new(
            self.fields.clone(),
            self.columns(&taken, true),
            None,
        )?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(self.columns(&taken, false))
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
        let nl = self.nl();
        // Numbers row by row: each row of values is written once.
        let numbers = values
            .iter()
            .enumerate()
            .filter(|(j, _)| self.list >> j & 1 == 0)
            .map(|(j, c)| Ok((j, as_f64(c)?)))
            .collect::<Result<Vec<_>>>()?;
        let numbers: Vec<(usize, Col<'_, f64>)> =
            numbers.iter().map(|(j, c)| (*j, col(c))).collect();
        for (row, &g) in group_indices.iter().enumerate() {
            let base = g * self.n;
            for (j, c) in &numbers {
                if let Some(x) = c.get(row) {
                    self.values[base + j] += x;
                }
            }
        }
        for (j, c) in values.iter().enumerate() {
            if self.list >> j & 1 == 1 {
                let k = self.slot(j);
                let Some(c) = c.as_list_opt::<i32>() else {
                    return exec_err!("{NAME} state p{j} is not a list");
                };
                let offsets = c.value_offsets();
                let Some(x) = c.values().as_primitive_opt::<Float64Type>() else {
                    return exec_err!("{NAME} state p{j} is not a list of doubles");
                };
                for (row, &g) in group_indices.iter().enumerate() {
                    if c.is_valid(row) {
                        let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                        if x.null_count() == 0 {
                            self.extend_values(g * nl + k, &x.values()[from..to]);
                        } else {
                            for i in (from..to).filter(|&i| x.is_valid(i)) {
                                self.extend_values(g * nl + k, &[x.value(i)]);
                            }
                        }
                    }
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
        std::mem::size_of::<Self>()
            + self.values.capacity() * std::mem::size_of::<f64>()
            + self.lists.capacity() * std::mem::size_of::<Vec<f64>>()
            + self.list_bytes
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
                    Agg::Values => panic!("values parts have a test of their own"),
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
            Arc::new(BooleanArray::from(vec![false; rows.len()])),
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
    fn bots_events_count_nowhere() {
        let mut acc = udaf().accumulator_state();
        let (mut values, groups) = arrays(&rows(), true);
        // Every third row is a bot's; a NULL flag counts as one too, as
        // `WHERE NOT is_bot` drops it.
        values[5] = Arc::new(
            (0..rows().len())
                .map(|i| if i == 1 { None } else { Some(i % 3 == 0) })
                .collect::<BooleanArray>(),
        );
        acc.update_batch(&values, &groups, None, 3).unwrap();
        let humans: Vec<Row> = rows()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0 && *i != 1)
            .map(|(_, r)| r)
            .collect();
        let got = evaluated(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(got, expected(&parts(), &humans, 3));
        assert_ne!(got, expected(&parts(), &rows(), 3));
    }

    /// Each group's parts: counts as numbers, values parts as lists (None: NULL).
    fn with_lists(a: &ArrayRef) -> Vec<Vec<Result<f64, Option<Vec<f64>>>>> {
        let s = a.as_struct();
        (0..s.len())
            .map(|g| {
                s.columns()
                    .iter()
                    .map(|c| match c.as_list_opt::<i32>() {
                        Some(l) => Err(l.is_valid(g).then(|| {
                            let x = l.value(g);
                            x.as_primitive::<Float64Type>().values().to_vec()
                        })),
                        None => Ok(as_f64(c).unwrap().value(g)),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn values_parts_gather_the_matching_values() {
        let parts = vec![
            part(
                Agg::Count,
                r#"{"type": "purchase"}"#,
                false,
                Window::Analysis,
            ),
            part(
                Agg::Values,
                r#"{"type": "purchase"}"#,
                true,
                Window::Analysis,
            ),
            part(
                Agg::Values,
                r#"{"type": "checkout_completed"}"#,
                true,
                Window::Analysis,
            ),
        ];
        let udaf = PartsUdaf::new(&parts, START, NOVELTY).unwrap();
        let all = rows();
        let mut whole = udaf.accumulator_state();
        let (values, groups) = arrays(&all, true);
        whole.update_batch(&values, &groups, None, 3).unwrap();
        // From `rows()`: in the analysis window, group 0 has purchases at
        // 1 050 (10.0) and 1 150 (no value), group 1 none (1 199 < lo) and
        // two checkouts of 2.0, group 2 one purchase (-1.5; the other row
        // has no unit window).
        let want = vec![
            vec![Ok(2.0), Err(Some(vec![10.0])), Err(None)],
            vec![Ok(0.0), Err(None), Err(Some(vec![2.0, 2.0]))],
            vec![Ok(1.0), Err(Some(vec![-1.5])), Err(None)],
        ];
        assert_eq!(with_lists(&whole.evaluate(EmitTo::All).unwrap()), want);
        assert_eq!(whole.size(), std::mem::size_of::<PartsAccumulator>());

        // Partial states, split by rows and emitted a group at a time,
        // merge to the same lists.
        let (head, tail) = all.split_at(5);
        let mut merged = udaf.accumulator_state();
        for chunk in [head, tail] {
            let mut acc = udaf.accumulator_state();
            let (values, groups) = arrays(chunk, true);
            acc.update_batch(&values, &groups, None, 3).unwrap();
            assert!(acc.size() > std::mem::size_of::<PartsAccumulator>());
            let first = acc.state(EmitTo::First(1)).unwrap();
            merged.merge_batch(&first, &[0], 3).unwrap();
            let rest = acc.state(EmitTo::All).unwrap();
            merged.merge_batch(&rest, &[1, 2], 3).unwrap();
        }
        let first = with_lists(&merged.evaluate(EmitTo::First(1)).unwrap());
        assert_eq!(first, want[..1]);
        assert_eq!(
            with_lists(&merged.evaluate(EmitTo::All).unwrap()),
            want[1..]
        );
        // Rows turned into states one by one merge to the same.
        let mut per_row = udaf.accumulator_state();
        let state = per_row.convert_to_state(&values, None).unwrap();
        per_row.merge_batch(&state, &groups, 3).unwrap();
        assert_eq!(with_lists(&per_row.evaluate(EmitTo::All).unwrap()), want);
    }

    /// Stage 2a as the aggregate and as plain SQL, over the same events, with
    /// and without deduplication: the same values per unit (a sum over no
    /// event is 0 and NULL, lists are compared as sets of values).
    #[test]
    fn the_sql_form_computes_the_same_parts() {
        use crate::plan::{unit_parts_sql, Bounds};
        use datafusion::arrow::array::RecordBatch;
        use datafusion::arrow::datatypes::Schema;
        use datafusion::datasource::MemTable;
        use datafusion::prelude::SessionContext;

        let mut parts = parts();
        for t in ["purchase", "page_load"] {
            parts.push(part(
                Agg::Values,
                &format!(r#"{{"type": "{t}"}}"#),
                true,
                Window::Analysis,
            ));
        }
        // (event_id, unit_id, type, ts, value, is_bot); e1 is sent twice.
        type Event = (
            &'static str,
            &'static str,
            &'static str,
            i64,
            Option<f64>,
            bool,
        );
        let events: Vec<Event> = vec![
            ("e1", "u0", "purchase", 1_050, Some(10.0), false),
            ("e1", "u0", "purchase", 1_052, Some(10.0), false),
            ("e2", "u0", "purchase", 1_150, None, false),
            ("e3", "u0", "purchase", 990, Some(4.0), false),
            ("e4", "u0", "refund", 600, Some(1.0), false),
            ("e5", "u0", "page_load", 1_010, Some(300.0), false),
            ("e6", "u0", "page_load", 1_020, Some(250.0), true),
            ("e7", "u1", "checkout_completed", 1_300, Some(2.0), false),
            ("e8", "u1", "page_load", 1_400, Some(120.0), false),
            ("e9", "u1", "page_load", 1_401, None, false),
            ("e10", "u1", "purchase", 1_199, Some(9.0), false),
            ("e11", "u2", "page_view", 1_250, None, false),
            ("e12", "u9", "purchase", 1_250, Some(5.0), false),
        ];
        let ev = RecordBatch::try_from_iter(vec![
            (
                "event_id",
                Arc::new(events.iter().map(|e| Some(e.0)).collect::<StringArray>()) as ArrayRef,
            ),
            (
                "unit_id",
                Arc::new(events.iter().map(|e| Some(e.1)).collect::<StringArray>()),
            ),
            (
                "type",
                Arc::new(events.iter().map(|e| Some(e.2)).collect::<StringArray>()),
            ),
            (
                "ts",
                Arc::new(events.iter().map(|e| Some(e.3)).collect::<Int64Array>()),
            ),
            (
                "value",
                Arc::new(events.iter().map(|e| e.4).collect::<Float64Array>()),
            ),
            (
                "is_bot",
                Arc::new(events.iter().map(|e| Some(e.5)).collect::<BooleanArray>()),
            ),
        ])
        .unwrap();
        // (unit_id, uidx, lo, first_ts)
        let units = RecordBatch::try_from_iter(vec![
            (
                "unit_id",
                Arc::new(StringArray::from(vec!["u0", "u1", "u2"])) as ArrayRef,
            ),
            ("uidx", Arc::new(Int64Array::from(vec![0, 1, 2]))),
            ("lo", Arc::new(Int64Array::from(vec![1_000, 1_200, 1_200]))),
            (
                "first_ts",
                Arc::new(Int64Array::from(vec![1_000, 1_205, 1_205])),
            ),
        ])
        .unwrap();
        let b = Bounds {
            start: START,
            end: 10_000,
            pre_start: Some(500),
            skew: 5,
            novelty: NOVELTY,
            exposures_from: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let run = |sql: String| {
            let ctx = SessionContext::new();
            for (name, batch) in [("events", &ev), ("unit_keys", &units)] {
                let t = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
                ctx.register_table(name, Arc::new(t)).unwrap();
            }
            let udaf = PartsUdaf::new(&parts, START, NOVELTY).unwrap();
            ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(udaf));
            let batches = rt.block_on(async {
                ctx.sql(&format!("SELECT * FROM ({sql}) ORDER BY uidx"))
                    .await?
                    .collect()
                    .await
            });
            let batches: Vec<RecordBatch> = batches
                .unwrap()
                .iter()
                .map(|b| flatten(b).unwrap())
                .collect();
            let schema: Arc<Schema> = batches[0].schema();
            datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap()
        };
        // Each unit's parts: numbers (NULL as 0) or sorted lists (NULL: None).
        let read = |batch: &RecordBatch| -> Vec<Vec<Result<f64, Option<Vec<f64>>>>> {
            (0..batch.num_rows())
                .map(|r| {
                    (0..parts.len())
                        .map(|i| {
                            let c = batch.column_by_name(&format!("p{i}")).unwrap();
                            match c.as_list_opt::<i32>() {
                                Some(l) => Err(l.is_valid(r).then(|| {
                                    let mut v =
                                        l.value(r).as_primitive::<Float64Type>().values().to_vec();
                                    v.sort_by(f64::total_cmp);
                                    v
                                })),
                                None => {
                                    let c = as_f64(c).unwrap();
                                    Ok(if c.is_valid(r) { c.value(r) } else { 0.0 })
                                }
                            }
                        })
                        .collect()
                })
                .collect()
        };
        for dedup in [true, false] {
            let fused = run(unit_parts_sql(&parts, &[], &b, dedup, None, true));
            let sql = run(unit_parts_sql(&parts, &[], &b, dedup, None, false));
            assert_eq!(fused.num_rows(), 3, "dedup={dedup}: units with events");
            assert_eq!(read(&fused), read(&sql), "dedup={dedup}");
            // u0: purchases e1 (once when deduplicated) and e2 in the window;
            // page loads e5 only (e6 is a bot's).
            let u0 = &read(&fused)[0];
            let purchases = if dedup { 2.0 } else { 3.0 };
            assert_eq!(u0[0], Ok(purchases), "dedup={dedup}");
            let want: &[f64] = if dedup { &[10.0] } else { &[10.0, 10.0] };
            assert_eq!(u0[7], Err(Some(want.to_vec())), "dedup={dedup}");
            assert_eq!(u0[8], Err(Some(vec![300.0])), "dedup={dedup}");
            // u1: no purchase in its window (NULL), one page load with a value.
            assert_eq!(read(&fused)[1][7..], [Err(None), Err(Some(vec![120.0]))]);
        }
    }

    #[test]
    fn the_view_table_finds_every_type_and_nothing_else() {
        let names: Vec<String> = (0..40).map(|i| format!("type_{i}")).collect();
        let t = ViewTable::new(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (inline_view(n.as_bytes()), 1u64 << i)),
        );
        assert!(
            t.list.is_none(),
            "a collision-free table exists for 40 types"
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(t.get(inline_view(n.as_bytes())), Some(1u64 << i), "{n}");
        }
        for other in ["", "type_40", "page_view", "type_1 "] {
            assert_eq!(t.get(inline_view(other.as_bytes())), None, "{other}");
        }
        let empty = ViewTable::new(std::iter::empty());
        assert_eq!(empty.get(inline_view(b"x")), None);
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
