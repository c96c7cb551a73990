//! Shared stage 1: every look's units from one scan of the exposures.
//!
//! A look's stage 1 ([`plan::units_sql`]) reduces its experiment's
//! exposures to one row per unit. The experiments of a run share their
//! exposures' files, and a filter on the experiment prunes none of them,
//! so 50 looks read every exposure 50 times: at 20 M exposures, 0.45 s of
//! a look's 1.3 s. Here one scan, folded in this process, gives every look
//! its rows of `units_all` as [`plan::units_sql`] gives them (for a look
//! without segments), and each unit's first exposure in each look, of
//! which the rollup's cut points are made ([`super::unit_cuts`]).
//!
//! The fold keeps, per look and unit, what the SQL's aggregates keep: the
//! earliest time, the least and greatest variant (by name, as SQL
//! compares strings), whether some exposure has no variant, and whether
//! one is opted out. A unit whose exposures disagree on the variant is
//! flagged `ambiguous`, as by the SQL, and the engine then takes its
//! variant from its first exposure in SQL, as without a rollup.
//!
//! Memory: 16 bytes per look and unit exposed in it, and 4 bytes per look
//! and unit (at 1 M units in 50 experiments, 19 M pairs: about 500 MB),
//! held outside the engine's memory pool for as long as the rollup.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringBuilder,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::HashMap;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;

use super::read::{self, Strings};
use crate::error::{Error, Result};
use crate::plan::{self, Bounds, CutLook};
use crate::source::{literal, literal_list};
use crate::spec::AnalysisMode;

/// No variant (a null), or no state.
const NONE: u32 = u32::MAX >> 1;
/// Flag bits kept in the high bit of [`State::vmin`] and [`State::vmax`].
const FLAG: u32 = 1 << 31;

/// One unit's exposures in one look, as the aggregates of
/// [`plan::units_sql`] reduce them.
#[derive(Debug, Clone, Copy)]
struct State {
    /// `MIN(ts)`.
    first: i64,
    /// The least variant's number ([`NONE`] if every one is null); the
    /// high bit: some exposure is opted out.
    vmin: u32,
    /// The greatest variant's number; the high bit: some exposure has no
    /// variant.
    vmax: u32,
}

impl State {
    fn new(ts: i64, v: u32, opted: bool) -> Self {
        let mut s = Self {
            first: ts,
            vmin: NONE,
            vmax: NONE,
        };
        s.add(ts, v, opted, &[]);
        s
    }

    fn add(&mut self, ts: i64, v: u32, opted: bool, names: &[Box<str>]) {
        self.first = self.first.min(ts);
        if opted {
            self.vmin |= FLAG;
        }
        if v == NONE {
            self.vmax |= FLAG;
            return;
        }
        let (lo, hi) = (self.vmin & !FLAG, self.vmax & !FLAG);
        if lo == NONE {
            self.vmin = (self.vmin & FLAG) | v;
            self.vmax = (self.vmax & FLAG) | v;
        } else if v != lo || v != hi {
            let name = &names[v as usize];
            if name < &names[lo as usize] {
                self.vmin = (self.vmin & FLAG) | v;
            }
            if name > &names[hi as usize] {
                self.vmax = (self.vmax & FLAG) | v;
            }
        }
    }

    fn opted(&self) -> bool {
        self.vmin & FLAG != 0
    }

    fn has_null(&self) -> bool {
        self.vmax & FLAG != 0
    }

    /// The least and greatest variants, if any is not null.
    fn range(&self) -> Option<(u32, u32)> {
        let lo = self.vmin & !FLAG;
        (lo != NONE).then_some((lo, self.vmax & !FLAG))
    }
}

/// Every look's units, from one scan of the exposures ([`scan`]).
#[derive(Debug)]
pub(crate) struct SharedUnits {
    looks: Vec<CutLook>,
    /// Unit ids by number, of the exposures' `unit_id` type (a null id
    /// is a unit, as for SQL's grouping).
    ids: ArrayRef,
    /// Variant names by number, and the type of the variant columns.
    variants: Vec<Box<str>>,
    variant_type: DataType,
    /// Per unit, per look (unit-major): the index of its state in
    /// `states`, or [`NONE`].
    pos: Vec<u32>,
    states: Vec<State>,
}

/// Scans the exposures (`exposures` in `ctx`) once for every look of
/// `looks` (each look's analysis mode says which variant column it
/// reads).
pub(crate) async fn scan(ctx: &SessionContext, looks: &[CutLook]) -> Result<SharedUnits> {
    let modes = |m: AnalysisMode| looks.iter().any(|l| l.mode == m);
    let mut cols = vec!["unit_id", "experiment", "ts", "opted_out"];
    for m in [AnalysisMode::Itt, AnalysisMode::PerProtocol] {
        if modes(m) {
            cols.push(plan::variant_column(m));
        }
    }
    let end = looks.iter().map(|l| l.bounds.end).max().unwrap_or(0);
    let sql = format!(
        "SELECT {} FROM exposures WHERE experiment IN ({}) AND ts < {end}",
        cols.join(", "),
        if looks.is_empty() {
            literal("")
        } else {
            literal_list(looks.iter().map(|l| l.key.as_str()))
        }
    );
    let df = ctx.sql(&sql).await?;
    let schema = df.schema().as_arrow().clone();
    let mut fold = Fold::new(looks, &schema)?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        fold.add(&batch?)?;
    }
    fold.finish()
}

/// The fold of [`scan`], batch by batch.
pub(crate) struct Fold<'a> {
    looks: &'a [CutLook],
    /// Per experiment key, its looks.
    by_key: HashMap<&'a str, Vec<usize>>,
    unit_type: DataType,
    variant_type: DataType,
    units: HashMap<Box<str>, u32>,
    null_unit: Option<u32>,
    ids: StringBuilder,
    variants: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// Per unit, per look: the index of its state (or [`NONE`]). Unit by
    /// unit, with the states appended as they come, so that a unit's rows,
    /// which tend to come together, find its looks' states close together
    /// rather than one look's array apart each (at 1 M units and 50
    /// looks, the fold took a third less time).
    pos: Vec<u32>,
    states: Vec<State>,
}

impl<'a> Fold<'a> {
    /// A fold for `looks` of rows of `schema` (`unit_id`, `experiment`,
    /// `ts`, `opted_out` and the looks' variant columns).
    pub(crate) fn new(looks: &'a [CutLook], schema: &Schema) -> Result<Self> {
        let field = |name: &str| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| Error::invalid("plan", "exposures", format!("no column `{name}`")))
        };
        let variant_type = match looks.first() {
            Some(l) => field(plan::variant_column(l.mode))?,
            None => DataType::Utf8,
        };
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::default();
        for (i, l) in looks.iter().enumerate() {
            by_key.entry(l.key.as_str()).or_default().push(i);
        }
        Ok(Self {
            looks,
            by_key,
            unit_type: field("unit_id")?,
            variant_type,
            units: HashMap::default(),
            null_unit: None,
            ids: StringBuilder::new(),
            variants: HashMap::default(),
            names: Vec::new(),
            pos: Vec::new(),
            states: Vec::new(),
        })
    }

    fn new_unit(&mut self, id: Option<&str>) -> Result<u32> {
        let n = u32::try_from(self.ids.len())
            .ok()
            .filter(|&n| n < NONE)
            .ok_or_else(|| Error::invalid("plan", "exposures", "too many units"))?;
        self.ids.append_option(id);
        self.pos.extend(std::iter::repeat_n(NONE, self.looks.len()));
        Ok(n)
    }

    fn unit(&mut self, id: Option<&str>) -> Result<u32> {
        match id {
            None => match self.null_unit {
                Some(n) => Ok(n),
                None => {
                    let n = self.new_unit(None)?;
                    self.null_unit = Some(n);
                    Ok(n)
                }
            },
            Some(id) => match self.units.get(id) {
                Some(&n) => Ok(n),
                None => {
                    let n = self.new_unit(Some(id))?;
                    self.units.insert(id.into(), n);
                    Ok(n)
                }
            },
        }
    }

    fn variant(&mut self, name: Option<&str>) -> Result<u32> {
        let Some(name) = name else {
            return Ok(NONE);
        };
        if let Some(&v) = self.variants.get(name) {
            return Ok(v);
        }
        let v = u32::try_from(self.names.len())
            .ok()
            .filter(|&v| v < NONE)
            .ok_or_else(|| Error::invalid("plan", "exposures", "too many variant names"))?;
        self.names.push(name.into());
        self.variants.insert(name.into(), v);
        Ok(v)
    }

    /// Folds in one batch of rows.
    pub(crate) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let units = Strings::of(batch, "unit_id")?;
        let keys = Strings::of(batch, "experiment")?;
        let ts = read::ints(batch, "ts")?;
        let ts = ts.as_primitive::<Int64Type>();
        let opted = cast(
            batch
                .column_by_name("opted_out")
                .ok_or_else(|| Error::invalid("plan", "exposures", "no column `opted_out`"))?,
            &DataType::Boolean,
        )
        .map_err(datafusion::error::DataFusionError::from)?;
        let opted = opted.as_boolean();
        let column = |m: AnalysisMode| -> Result<Option<Strings<'_>>> {
            let name = plan::variant_column(m);
            if batch.column_by_name(name).is_some() {
                Strings::of(batch, name).map(Some)
            } else {
                Ok(None)
            }
        };
        let (itt, pp) = (
            column(AnalysisMode::Itt)?,
            column(AnalysisMode::PerProtocol)?,
        );
        let looks = self.looks;
        // Rows of one unit, and of one experiment, often come together: the
        // last of each is looked up once.
        let mut last_key: Option<(&str, Option<&Vec<usize>>)> = None;
        let mut last_unit: Option<(Option<&str>, u32)> = None;
        let by_key = std::mem::take(&mut self.by_key);
        for row in 0..batch.num_rows() {
            if ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            let Some(key) = keys.get(row) else {
                continue;
            };
            let of_key = match last_key {
                Some((k, l)) if k == key => l,
                _ => {
                    let l = by_key.get(key);
                    last_key = Some((key, l));
                    l
                }
            };
            let Some(of_key) = of_key else {
                continue;
            };
            let id = units.get(row);
            let u = match last_unit {
                Some((i, u)) if i == id => u,
                _ => {
                    let u = self.unit(id)?;
                    last_unit = Some((id, u));
                    u
                }
            };
            let o = opted.is_valid(row) && opted.value(row);
            let (mut v_itt, mut v_pp) = (None, None);
            for &l in of_key {
                let look = &looks[l];
                let b = &look.bounds;
                if t >= b.end || b.exposures_from.is_some_and(|f| t < f) {
                    continue;
                }
                let (cache, col) = match look.mode {
                    AnalysisMode::Itt => (&mut v_itt, &itt),
                    AnalysisMode::PerProtocol => (&mut v_pp, &pp),
                };
                let v = match *cache {
                    Some(v) => v,
                    None => {
                        let name = col.as_ref().and_then(|c| c.get(row));
                        let v = self.variant(name)?;
                        *cache = Some(v);
                        v
                    }
                };
                let at = u as usize * looks.len() + l;
                match self.pos[at] {
                    NONE => {
                        self.pos[at] = u32::try_from(self.states.len())
                            .ok()
                            .filter(|&p| p < NONE)
                            .ok_or_else(|| Error::invalid("plan", "exposures", "too many units"))?;
                        self.states.push(State::new(t, v, o));
                    }
                    p => self.states[p as usize].add(t, v, o, &self.names),
                }
            }
        }
        self.by_key = by_key;
        Ok(())
    }

    /// The looks' units.
    pub(crate) fn finish(self) -> Result<SharedUnits> {
        let mut ids = self.ids;
        let ids: ArrayRef = Arc::new(ids.finish());
        let ids = cast(&ids, &self.unit_type).map_err(datafusion::error::DataFusionError::from)?;
        Ok(SharedUnits {
            looks: self.looks.to_vec(),
            ids,
            variants: self.names,
            variant_type: self.variant_type,
            pos: self.pos,
            states: self.states,
        })
    }
}

impl SharedUnits {
    /// The looks, in the order they were scanned for.
    pub(crate) fn looks(&self) -> &[CutLook] {
        &self.looks
    }

    /// The type of the unit ids (the exposures' `unit_id` type).
    pub(crate) fn id_type(&self) -> &DataType {
        self.ids.data_type()
    }

    /// How many units were seen.
    pub(crate) fn n_units(&self) -> usize {
        self.ids.len()
    }

    /// Unit ids `numbers`, of the exposures' `unit_id` type.
    pub(crate) fn ids(&self, numbers: &[u32]) -> Result<ArrayRef> {
        Ok(take(&self.ids, &UInt32Array::from(numbers.to_vec()), None)
            .map_err(datafusion::error::DataFusionError::from)?)
    }

    /// Unit `unit`'s state in look `look`, if it was exposed in it.
    fn state(&self, unit: usize, look: usize) -> Option<&State> {
        match self.pos.get(unit * self.looks.len() + look) {
            Some(&p) if p != NONE => self.states.get(p as usize),
            _ => None,
        }
    }

    /// Unit `unit`'s first exposure in look `look`, if it was exposed in it.
    pub(crate) fn first(&self, unit: usize, look: usize) -> Option<i64> {
        self.state(unit, look).map(|s| s.first)
    }

    /// The look of experiment `key` with bounds `b` under `mode`, if the
    /// scan was made for it.
    pub(crate) fn look(&self, key: &str, b: &Bounds, mode: AnalysisMode) -> Option<usize> {
        self.looks
            .iter()
            .position(|l| l.key == key && l.bounds == *b && l.mode == mode)
    }

    /// Look `look`'s rows of `units_all`, as [`plan::units_sql`] without
    /// segments gives them: `unit_id`, `variant`, `first_ts`,
    /// `multi_variant`, `opted_out` and `ambiguous`.
    pub(crate) fn units_all(&self, look: usize) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_id", self.id_type().clone(), true),
            Field::new("variant", self.variant_type.clone(), true),
            Field::new("first_ts", DataType::Int64, true),
            Field::new("multi_variant", DataType::Boolean, true),
            Field::new("opted_out", DataType::Boolean, true),
            Field::new("ambiguous", DataType::Boolean, true),
        ]));
        if look >= self.looks.len() {
            return Err(Error::invalid("plan", "units_all", "no such look"));
        }
        let mut out = Vec::new();
        let (mut units, mut states) = (Vec::new(), Vec::new());
        for u in 0..self.n_units() {
            if let Some(s) = self.state(u, look) {
                units.push(u as u32);
                states.push(*s);
            }
            if units.len() == super::COMPACT_ROWS {
                out.push(self.units_batch(&schema, &units, &states)?);
                units.clear();
                states.clear();
            }
        }
        if !units.is_empty() {
            out.push(self.units_batch(&schema, &units, &states)?);
        }
        Ok((schema, out))
    }

    /// The rows of `units_all` of units `units` with states `states`.
    fn units_batch(
        &self,
        schema: &SchemaRef,
        units: &[u32],
        states: &[State],
    ) -> Result<RecordBatch> {
        let mut variant = StringBuilder::new();
        for s in states {
            variant.append_option(s.range().map(|(lo, _)| &*self.variants[lo as usize]));
        }
        let variant: ArrayRef = Arc::new(variant.finish());
        let multi: BooleanArray = states
            .iter()
            .map(|s| s.range().map(|(lo, hi)| lo != hi))
            .collect();
        // `NOT ((MIN = MAX AND COUNT(v) = COUNT(*)) OR COUNT(v) = 0)`.
        let ambiguous: BooleanArray = states
            .iter()
            .map(|s| Some(s.range().is_some_and(|(lo, hi)| lo != hi || s.has_null())))
            .collect();
        let opted: BooleanArray = states.iter().map(|s| Some(s.opted())).collect();
        let columns: Vec<ArrayRef> = vec![
            self.ids(units)?,
            cast(&variant, &self.variant_type).map_err(datafusion::error::DataFusionError::from)?,
            Arc::new(states.iter().map(|s| Some(s.first)).collect::<Int64Array>()),
            Arc::new(multi),
            Arc::new(opted),
            Arc::new(ambiguous),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)
            .map_err(datafusion::error::DataFusionError::from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, StringViewArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;

    fn look(key: &str, end: i64, from: Option<i64>, mode: AnalysisMode) -> CutLook {
        CutLook {
            key: key.into(),
            bounds: Bounds {
                start: 100,
                end,
                pre_start: None,
                skew: 5,
                novelty: 50,
                exposures_from: from,
            },
            novelty: false,
            mode,
        }
    }

    /// Exposures as the canonical view gives them, drawn from `seed`: a
    /// few units (one of them without an id), experiments `a`, `b` and
    /// `c`, variants that mostly agree per unit, some null, ties on time.
    fn exposures(seed: u64, rows: usize) -> RecordBatch {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let (mut units, mut keys, mut variant, mut assigned, mut opted, mut ts) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let names = ["control", "treatment", "b"];
        for _ in 0..rows {
            let u = next(12);
            units.push((u != 0).then(|| format!("u{u}")));
            let key = ["a", "b", "c"][next(3) as usize];
            keys.push((next(30) != 0).then_some(key));
            // A unit's usual variant, now and then another or none.
            let v = |r: u64| match r {
                0 => None,
                1 => Some(names[(u as usize + 1) % 3]),
                _ => Some(names[u as usize % 3]),
            };
            variant.push(v(next(8)));
            assigned.push(v(next(10)));
            opted.push(next(9) == 0);
            ts.push((next(40) != 0).then(|| (next(50) * 20) as i64));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_id", DataType::Utf8, true),
            Field::new("experiment", DataType::Utf8View, true),
            Field::new("variant", DataType::Utf8View, true),
            Field::new("assigned_variant", DataType::Utf8View, true),
            Field::new("opted_out", DataType::Boolean, false),
            Field::new("ts", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(units)),
                Arc::new(StringViewArray::from(keys)),
                Arc::new(StringViewArray::from(variant)),
                Arc::new(StringViewArray::from(assigned)),
                Arc::new(BooleanArray::from(opted)),
                Arc::new(Int64Array::from(ts)),
            ],
        )
        .unwrap()
    }

    async fn sorted(ctx: &SessionContext, sql: &str) -> String {
        let rows = ctx
            .sql(&format!(
                "SELECT * FROM ({sql}) ORDER BY unit_id NULLS FIRST"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&rows).unwrap().to_string()
    }

    /// Each look's `units_all` from the shared scan is the SQL of its own
    /// stage 1, row for row, and each unit's first exposure is the one the
    /// SQL of the rollup's cut points finds.
    #[tokio::test]
    async fn each_looks_units_are_those_of_its_own_stage_1() {
        let looks = [
            look("a", 800, None, AnalysisMode::Itt),
            look("a", 1000, Some(300), AnalysisMode::PerProtocol),
            look("b", 500, None, AnalysisMode::Itt),
            look("b", 1000, Some(20), AnalysisMode::Itt),
        ];
        for seed in 0..24 {
            let batch = exposures(seed, 40 + 20 * seed as usize);
            let ctx = SessionContext::new();
            // In three batches, as a scan gives them.
            let parts = vec![
                batch.slice(0, 10),
                batch.slice(10, 25),
                batch.slice(35, batch.num_rows() - 35),
            ];
            ctx.register_table(
                "exposures",
                Arc::new(MemTable::try_new(batch.schema(), vec![parts]).unwrap()),
            )
            .unwrap();
            let shared = scan(&ctx, &looks).await.unwrap();
            for (i, l) in looks.iter().enumerate() {
                assert_eq!(shared.look(&l.key, &l.bounds, l.mode), Some(i));
                let (schema, rows) = shared.units_all(i).unwrap();
                ctx.deregister_table("shared").unwrap();
                ctx.register_table(
                    "shared",
                    Arc::new(MemTable::try_new(schema, vec![rows]).unwrap()),
                )
                .unwrap();
                let ours = sorted(&ctx, "SELECT * FROM shared").await;
                let sql = plan::units_sql(&l.key, l.mode, 0, &l.bounds);
                assert_eq!(ours, sorted(&ctx, &sql).await, "seed {seed}, look {i}");
            }
            // The first exposures, as the cut points' SQL finds them.
            let mut ours = Vec::new();
            for u in 0..shared.n_units() {
                let f: Vec<Option<i64>> = (0..looks.len()).map(|l| shared.first(u, l)).collect();
                let id = shared.ids(&[u as u32]).unwrap();
                let id = id.as_string::<i32>();
                ours.push((id.is_valid(0).then(|| id.value(0).to_string()), f));
            }
            ours.sort();
            let mut theirs = Vec::new();
            for b in ctx
                .sql(&plan::first_exposures_sql(&looks))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
            {
                let id = cast(b.column(0), &DataType::Utf8).unwrap();
                let id = id.as_string::<i32>();
                for r in 0..b.num_rows() {
                    let f = (0..looks.len())
                        .map(|i| {
                            let c = b.column(i + 1).as_primitive::<Int64Type>();
                            c.is_valid(r).then(|| c.value(r))
                        })
                        .collect();
                    theirs.push((id.is_valid(r).then(|| id.value(r).to_string()), f));
                }
            }
            theirs.sort();
            assert_eq!(ours, theirs, "seed {seed}");
        }
    }

    /// A look whose exposures are all outside its bounds has no units, and
    /// no look has a unit of an experiment it is not about.
    #[tokio::test]
    async fn rows_outside_every_look_make_no_units() {
        let looks = [
            look("a", 1, None, AnalysisMode::Itt),
            look("zz", 1000, None, AnalysisMode::Itt),
        ];
        let ctx = SessionContext::new();
        let batch = exposures(7, 200);
        ctx.register_table(
            "exposures",
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let shared = scan(&ctx, &looks).await.unwrap();
        // Time 0 is before the end of 1 for look `a`.
        let (_, a) = shared.units_all(0).unwrap();
        let (_, zz) = shared.units_all(1).unwrap();
        assert!(a.iter().map(RecordBatch::num_rows).sum::<usize>() > 0);
        assert_eq!(zz.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
        let ts: Vec<i64> = a
            .iter()
            .flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert!(ts.iter().all(|&t| t == 0), "{ts:?}");
        assert_eq!(
            shared.look("a", &looks[0].bounds, AnalysisMode::PerProtocol),
            None
        );
    }
}
