//! A check's per-unit work, folded in this process.
//!
//! A check needs, per experiment and unit it still holds, the unit's first
//! exposure and the sums of its events' parts within the metrics' windows
//! from it. As SQL that is a join of every event of the range to the
//! units of each of its unit's experiments, an aggregate per (unit,
//! experiment, event) to deduplicate, one per (unit, experiment) for the
//! parts, and a last one per variant: at 300 experiments whose units each
//! join three of them, 20 M (experiment, unit) rows and as many joined
//! events went through four hash tables per check, and a check under load
//! took 35–76 s. Here the engine only scans: the exposures since the last
//! check and the events of the range, each with the columns the check
//! reads and, for the events, each part's filter evaluated as SQL (the
//! analysis's own expressions, [`plan::filter_sql`]). The rows are folded
//! as they stream:
//!
//! * A unit is known by a 128-bit hash of its id ([`unit_key`]): a held
//!   unit costs 32 bytes whatever its id, and two ids of the units seen in
//!   a year collide with a probability below 10⁻²⁰ (an event would then
//!   count for the other unit).
//! * Every event of a held unit counts once per experiment of the unit as
//!   it streams by, and a 64-bit hash of its (unit, `event_id`) goes into
//!   a set. A key seen twice marks a duplicate (or, rarely, two events
//!   whose hashes collide); after the scan, one more query reads the
//!   marked events only and yields, per experiment of their unit, each
//!   copy's contribution with a minus sign and the merged event's (the
//!   analysis's deduplication: earliest `ts`, largest `value`, `type` and
//!   properties, filters evaluated on the merged row) with a plus sign.
//!   The fold's counts are then those of the deduplicated events, and a
//!   false mark cancels out.
//! * Only the units that can enter a metric's sample at this check (mature
//!   for it and not folded by an earlier check) keep their parts; the
//!   others only count their events in their variant's volume.
//!
//! Memory, outside the engine's operators and counted against the check's
//! memory limit: 24 bytes per held (experiment, unit), 32 per distinct
//! held unit, 8 per part of a unit entering a sample, 9–18 per event of a
//! held unit in the range (its key in the set), and 25–50 per (experiment,
//! unit) first exposed since the last check while the exposures are read.
//! The units held from check to check (32 bytes per (experiment, unit)
//! held, 9–18 per unit counted) are the [`super::MonitorState`]'s.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::{HashMap, HashSet};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

use super::{variant_codes, Acc, Compiled, Planned, UnitFold, WindowPart};
use crate::error::{Error, Result};
use crate::metrics::MetricType;
use crate::plan::{self, Agg};
use crate::rollup::read::{ints, Strings};
use crate::source::{literal_list, Source};

/// No slot, no accumulator.
const NONE: u32 = u32::MAX;

/// The hasher of tables keyed by [`unit_key`]s and [`event_key`]s, which
/// are hashes already: the key's bits are the table's hash (a 128-bit key
/// folded to 64). Hashing them again cost time on every event row.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by the keys above; any input still hashes well.
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, k: u64) {
        self.0 ^= k;
    }

    fn write_u128(&mut self, k: u128) {
        self.0 ^= (k as u64) ^ ((k >> 64) as u64);
    }
}

/// [`KeyHasher`]'s builder.
pub(super) type Keyed = std::hash::BuildHasherDefault<KeyHasher>;

/// A unit's key: a 128-bit hash of its id, seeded by a secret of the
/// process. The tables keyed by it take its bits as their hash
/// ([`KeyHasher`]): unseeded, unit ids could be chosen to crowd one bucket
/// of them and slow every check down. Keys live only in the process's
/// memory, so the seed need not outlive it.
pub(super) fn unit_key(id: &str) -> u128 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    });
    xxh3_128_with_seed(id.as_bytes(), seed)
}

/// The key of one event of a unit, for finding copies: a 64-bit hash of
/// its id seeded by the unit's key (a null id has a key of its own, as
/// SQL groups the nulls together).
fn event_key(unit: u128, event_id: Option<&str>) -> u64 {
    let seed = (unit as u64) ^ ((unit >> 64) as u64);
    match event_id {
        Some(id) => xxh3_64_with_seed(id.as_bytes(), seed),
        None => xxh3_64_with_seed(&[0xff], !seed),
    }
}

/// A unit an experiment's fold holds: its key, its first exposure and the
/// variant code ([`variant_codes`]) of that exposure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) key: u128,
    pub(super) first: i64,
    pub(super) code: u32,
}

fn shape(what: &str) -> Error {
    Error::invalid("monitor", what, "unexpected column type")
}

/// Reads the exposures of every spec in `[read_from, cutoff)` and adds to
/// each spec's fold the units first exposed there that it has not counted
/// (the earliest exposure of the range, the smallest variant key on a
/// tie); exposures to a variant the spec does not name are ignored.
pub(super) async fn read_new_units(
    ctx: &SessionContext,
    sources: &[&Source],
    specs: &[Compiled<'_>],
    units: &mut [UnitFold],
    reservation: &mut MemoryReservation,
) -> Result<()> {
    let lo = specs.iter().map(|c| c.read_from).min().unwrap_or(0);
    let hi = specs.iter().map(|c| c.cutoff).max().unwrap_or(0);
    let sql = format!(
        "SELECT experiment, unit_id, ts, assigned_variant FROM exposures \
         WHERE experiment IN ({}) AND ts >= {lo} AND ts < {hi}",
        literal_list(specs.iter().map(|c| c.spec.experiment.as_str()))
    );
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::default();
    for c in specs {
        by_key
            .entry(c.spec.experiment.as_str())
            .or_default()
            .push(c.eidx);
    }
    // Per spec, its variants' codes by key.
    let codes: Vec<Vec<(&str, u32)>> = specs
        .iter()
        .map(|c| {
            variant_codes(&c.spec.variants)
                .into_iter()
                .map(|(code, k)| (k, code as u32))
                .collect()
        })
        .collect();
    // The units first exposed in the range, as they are found: per spec
    // and 64 bits of the unit's key (those `seen` keeps), the unit's
    // place in the spec's `recent`.
    let mut fresh: HashMap<(u32, u64), u32> = HashMap::default();
    let mut stream = super::stream(ctx, sources, &sql).await?;
    while let Some(batch) = stream.next().await {
        let batch = super::read_error(ctx, sources, batch).await?;
        let keys = Strings::of(&batch, "experiment")?;
        let ids = Strings::of(&batch, "unit_id")?;
        let variants = Strings::of(&batch, "assigned_variant")?;
        let ts = ints(&batch, "ts")?;
        let ts = ts.as_primitive::<Int64Type>();
        let mut last_key: Option<(&str, Option<&Vec<usize>>)> = None;
        let mut last_unit: Option<(&str, u128)> = None;
        for row in 0..batch.num_rows() {
            let (Some(key), Some(id), Some(variant)) =
                (keys.get(row), ids.get(row), variants.get(row))
            else {
                continue;
            };
            if ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            let eidxs = match last_key {
                Some((k, l)) if k == key => l,
                _ => {
                    let l = by_key.get(key);
                    last_key = Some((key, l));
                    l
                }
            };
            let Some(eidxs) = eidxs else {
                continue;
            };
            let unit = match last_unit {
                Some((i, u)) if i == id => u,
                _ => {
                    let u = unit_key(id);
                    last_unit = Some((id, u));
                    u
                }
            };
            for &e in eidxs {
                let c = &specs[e];
                if t < c.read_from || t >= c.cutoff {
                    continue;
                }
                let Some(&(_, code)) = codes[e].iter().find(|(k, _)| *k == variant) else {
                    continue;
                };
                let u = &mut units[e];
                match fresh.get(&(e as u32, unit as u64)) {
                    Some(&i) => {
                        let h = &mut u.recent[i as usize];
                        if (t, code) < (h.first, h.code) {
                            (h.first, h.code) = (t, code);
                        }
                    }
                    // Not counted by an earlier check (which saw its
                    // first exposure then).
                    None if u.seen.insert(unit as u64) => {
                        let i = u32::try_from(u.recent.len()).map_err(|_| {
                            Error::invalid("monitor", "units", "too many units held")
                        })?;
                        u.recent.push(Held {
                            key: unit,
                            first: t,
                            code,
                        });
                        fresh.insert((e as u32, unit as u64), i);
                    }
                    None => {}
                }
            }
        }
        reservation
            .try_resize(fresh.capacity() * (std::mem::size_of::<((u32, u64), u32)>() + 1))?;
    }
    // Each new unit counts in the variant of its first exposure (a code's
    // place in the spec's order of variants).
    let places: Vec<Vec<usize>> = specs
        .iter()
        .map(|c| {
            variant_codes(&c.spec.variants)
                .into_iter()
                .map(|(_, k)| c.spec.variants.iter().position(|v| v == k).unwrap_or(0))
                .collect()
        })
        .collect();
    for (&(e, _), &i) in &fresh {
        let u = &mut units[e as usize];
        let code = u.recent[i as usize].code as usize;
        u.exposed[places[e as usize][code]] += 1;
    }
    reservation.free();
    Ok(())
}

/// One held (experiment, unit) of a check.
#[derive(Debug, Clone, Copy)]
struct Slot {
    first: i64,
    eidx: u32,
    code: u32,
    /// The next slot of the same unit, or [`NONE`].
    next: u32,
    /// Its parts' place in [`Events::parts`] (divided by their number), or
    /// [`NONE`] when it enters no sample at this check.
    acc: u32,
}

/// The events of a check's held units, folded per (experiment, unit).
pub(super) struct Events<'a> {
    specs: &'a [Compiled<'a>],
    planned: &'a [Planned],
    parts: &'a [WindowPart],
    /// [`entering`]'s bounds.
    entering: Vec<Vec<(i64, i64)>>,
    slots: Vec<Slot>,
    /// Per unit key, its first slot.
    heads: HashMap<u128, u32, Keyed>,
    /// Per accumulator, one value per part.
    values: Vec<f64>,
    /// Per spec and variant code, the events counted (deduplicated).
    volume: Vec<Vec<i64>>,
    /// The keys of the events seen, and the (unit, event) ids seen twice.
    seen: HashSet<u64, Keyed>,
    dups: HashSet<(String, Option<String>)>,
    reservation: MemoryReservation,
}

/// Per spec, per metric of the spec (in its order): the first exposures
/// of the units entering the metric's sample at this check, `(after,
/// upto]` — mature for it, and not in its fold.
fn entering(specs: &[Compiled], planned: &[Planned]) -> Vec<Vec<(i64, i64)>> {
    specs
        .iter()
        .map(|c| {
            c.metrics
                .iter()
                .map(|&j| {
                    let after = c.settled.get(&j).copied().unwrap_or(i64::MIN);
                    (after, c.cutoff.saturating_sub(planned[j].window))
                })
                .collect()
        })
        .collect()
}

fn enters((after, upto): (i64, i64), first: i64) -> bool {
    first > after && first <= upto
}

impl<'a> Events<'a> {
    /// The slots of every unit the specs' folds hold, and accumulators for
    /// those entering a sample; the memory they take is reserved in
    /// `reservation`.
    pub(super) fn new(
        specs: &'a [Compiled<'a>],
        planned: &'a [Planned],
        parts: &'a [WindowPart],
        units: &[UnitFold],
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let held: usize = units.iter().map(|u| u.recent.len()).sum();
        if held >= NONE as usize {
            return Err(Error::invalid("monitor", "units", "too many units held"));
        }
        // The unit index has an entry per distinct unit, at least as many
        // as the largest experiment's: sized for those at once, it grows
        // by a doubling or two rather than a dozen.
        let distinct = units.iter().map(|u| u.recent.len()).max().unwrap_or(0);
        // The slots and that much of the index, reserved before they are
        // made (the rest as it grows).
        reservation
            .try_resize(
                held * std::mem::size_of::<Slot>()
                    + distinct * (std::mem::size_of::<(u128, u32)>() + 1) * 8 / 7,
            )
            .map_err(Error::Engine)?;
        let entering = entering(specs, planned);
        let mut slots = Vec::with_capacity(held);
        let mut heads: HashMap<u128, u32, Keyed> =
            HashMap::with_capacity_and_hasher(distinct, Keyed::default());
        let mut accs = 0u32;
        for (e, u) in units.iter().enumerate() {
            for h in &u.recent {
                let acc = if entering[e].iter().any(|&b| enters(b, h.first)) {
                    accs += 1;
                    accs - 1
                } else {
                    NONE
                };
                let s = slots.len() as u32;
                // The unit's slots are chained from its latest.
                let next = heads.insert(h.key, s).unwrap_or(NONE);
                slots.push(Slot {
                    first: h.first,
                    eidx: e as u32,
                    code: h.code,
                    next,
                    acc,
                });
            }
        }
        let values = vec![0.0; accs as usize * parts.len()];
        let volume = specs
            .iter()
            .map(|c| vec![0; c.spec.variants.len()])
            .collect();
        let mut events = Self {
            specs,
            planned,
            parts,
            entering,
            slots,
            heads,
            values,
            volume,
            seen: HashSet::default(),
            dups: HashSet::default(),
            reservation,
        };
        events.reserve()?;
        Ok(events)
    }

    /// Resizes the reservation to the memory held.
    fn reserve(&mut self) -> Result<()> {
        let bytes = self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.heads.capacity() * (std::mem::size_of::<(u128, u32)>() + 1)
            + self.values.capacity() * 8
            + self.seen.capacity() * 9;
        self.reservation.try_resize(bytes).map_err(Error::Engine)?;
        Ok(())
    }

    /// Counts one event of slot `s` (with `sign` −1, takes it back):
    /// within its spec's range and from the clock skew before the unit's
    /// first exposure, in its variant's volume, and in each part it
    /// matches (`matched`) within the part's window.
    fn add(&mut self, s: u32, ts: i64, value: Option<f64>, matched: &[bool], sign: i64) {
        let slot = self.slots[s as usize];
        let specs = self.specs;
        let c = &specs[slot.eidx as usize];
        if ts < c.lo || ts >= c.cutoff {
            return;
        }
        let dt = ts.saturating_sub(slot.first);
        if dt < -c.skew {
            return;
        }
        self.volume[slot.eidx as usize][slot.code as usize] += sign;
        if slot.acc == NONE {
            return;
        }
        let n = self.parts.len();
        let values = &mut self.values[slot.acc as usize * n..][..n];
        for ((v, p), &m) in values.iter_mut().zip(self.parts).zip(matched) {
            if m && dt < p.window {
                let x = match p.part.agg {
                    Agg::Sum => value.unwrap_or(0.0),
                    Agg::Count | Agg::Values => 1.0,
                };
                *v += sign as f64 * x;
            }
        }
    }

    /// The SQL columns of the parts' filters, `f{i}`, over rows `e`.
    fn filters(&self, properties: &[String]) -> String {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut cond = plan::filter_sql(&p.part.filter, properties);
                if p.part.needs_value {
                    cond = format!("({cond}) AND e.value IS NOT NULL");
                }
                format!(", ({cond}) AS f{i}")
            })
            .collect()
    }

    /// Reads the events of `[lo, hi)` (the specs' ranges together), bots
    /// left out, and folds those of the held units; then takes back the
    /// copies of a duplicated event and counts the merged one instead.
    pub(super) async fn read(
        &mut self,
        ctx: &SessionContext,
        sources: &[&Source],
        properties: &[String],
    ) -> Result<()> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let lo = self.specs.iter().map(|c| c.lo).min().unwrap_or(0);
        let hi = self.specs.iter().map(|c| c.cutoff).max().unwrap_or(0);
        let sql = format!(
            "SELECT e.unit_id AS unit_id, e.event_id AS event_id, e.ts AS ts, e.value AS value{} \
             FROM events e WHERE NOT e.is_bot AND e.ts >= {lo} AND e.ts < {hi}",
            self.filters(properties)
        );
        let mut matched = vec![false; self.parts.len()];
        let mut stream = super::stream(ctx, sources, &sql).await?;
        while let Some(batch) = stream.next().await {
            let batch = super::read_error(ctx, sources, batch).await?;
            let ids = Strings::of(&batch, "unit_id")?;
            let event_ids = Strings::of(&batch, "event_id")?;
            let ts = ints(&batch, "ts")?;
            let ts = ts.as_primitive::<Int64Type>();
            let (values, flags) = self.columns(&batch)?;
            let mut last: Option<(&str, Option<(u128, u32)>)> = None;
            for row in 0..batch.num_rows() {
                let Some(id) = ids.get(row) else {
                    continue;
                };
                if ts.is_null(row) {
                    continue;
                }
                let head = match last {
                    Some((i, h)) if i == id => h,
                    _ => {
                        let k = unit_key(id);
                        let h = self.heads.get(&k).map(|&s| (k, s));
                        last = Some((id, h));
                        h
                    }
                };
                let Some((key, mut s)) = head else {
                    continue;
                };
                let event_id = event_ids.get(row);
                if !self.seen.insert(event_key(key, event_id)) {
                    self.dups
                        .insert((id.to_string(), event_id.map(str::to_string)));
                }
                let value = values.is_valid(row).then(|| values.value(row));
                for (m, f) in matched.iter_mut().zip(&flags) {
                    *m = f.is_valid(row) && f.value(row);
                }
                let t = ts.value(row);
                while s != NONE {
                    self.add(s, t, value, &matched, 1);
                    s = self.slots[s as usize].next;
                }
            }
            self.reserve()?;
        }
        self.seen = HashSet::default();
        if !self.dups.is_empty() {
            self.merge_copies(ctx, sources, properties, lo, hi).await?;
        }
        Ok(())
    }

    /// A batch's `value` and filter columns.
    fn columns(
        &self,
        batch: &RecordBatch,
    ) -> Result<(datafusion::arrow::array::Float64Array, Vec<BooleanArray>)> {
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| shape(name));
        let values = cast(col("value")?, &DataType::Float64)
            .map_err(datafusion::error::DataFusionError::from)?
            .as_primitive::<Float64Type>()
            .clone();
        let flags = (0..self.parts.len())
            .map(|i| {
                Ok(cast(col(&format!("f{i}"))?, &DataType::Boolean)
                    .map_err(datafusion::error::DataFusionError::from)?
                    .as_boolean()
                    .clone())
            })
            .collect::<Result<_>>()?;
        Ok((values, flags))
    }

    /// For the events marked as seen twice: per slot of their unit, takes
    /// back every copy counted and counts the merged event, as the
    /// analysis deduplicates (module documentation).
    async fn merge_copies(
        &mut self,
        ctx: &SessionContext,
        sources: &[&Source],
        properties: &[String],
        lo: i64,
        hi: i64,
    ) -> Result<()> {
        use datafusion::arrow::array::StringArray;
        let dups = std::mem::take(&mut self.dups);
        let (mut d_unit, mut d_event) = (Vec::new(), Vec::new());
        let mut units: HashSet<&str> = HashSet::default();
        for (u, e) in &dups {
            d_unit.push(u.as_str());
            d_event.push(e.as_deref());
            units.insert(u.as_str());
        }
        let (mut s_unit, mut s_slot, mut s_lo, mut s_cutoff) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in units {
            let mut s = self.heads.get(&unit_key(u)).copied().unwrap_or(NONE);
            while s != NONE {
                let c = &self.specs[self.slots[s as usize].eidx as usize];
                s_unit.push(u);
                s_slot.push(i64::from(s));
                s_lo.push(c.lo);
                s_cutoff.push(c.cutoff);
                s = self.slots[s as usize].next;
            }
        }
        let table = |fields: Vec<Field>, columns: Vec<Arc<dyn Array>>| -> Result<MemTable> {
            let schema = Arc::new(Schema::new(fields));
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(datafusion::error::DataFusionError::from)?;
            Ok(MemTable::try_new(schema, vec![vec![batch]])?)
        };
        ctx.register_table(
            "copies",
            Arc::new(table(
                vec![
                    Field::new("unit_id", DataType::Utf8, false),
                    Field::new("event_id", DataType::Utf8, true),
                ],
                vec![
                    Arc::new(StringArray::from(d_unit)),
                    Arc::new(StringArray::from(d_event)),
                ],
            )?),
        )?;
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        ctx.register_table(
            "copy_slots",
            Arc::new(table(
                vec![
                    Field::new("unit_id", DataType::Utf8, false),
                    int("slot"),
                    int("lo"),
                    int("cutoff"),
                ],
                vec![
                    Arc::new(StringArray::from(s_unit)),
                    Arc::new(Int64Array::from(s_slot)),
                    Arc::new(Int64Array::from(s_lo)),
                    Arc::new(Int64Array::from(s_cutoff)),
                ],
            )?),
        )?;
        let props: String = (0..properties.len())
            .map(|i| format!(", e.prop_{i} AS prop_{i}"))
            .collect();
        let max_props: String = (0..properties.len())
            .map(|i| format!(", MAX(prop_{i}) AS prop_{i}"))
            .collect();
        let filters = self.filters(properties);
        // Each slot's copies within its spec's range, as the stream counted
        // them, and their merge per slot and event.
        let sql = format!(
            "WITH raw AS (SELECT s.slot AS slot, e.event_id AS event_id, e.ts AS ts, \
             e.value AS value, e.type AS type{props} FROM events e \
             JOIN copies d ON e.unit_id = d.unit_id AND e.event_id IS NOT DISTINCT FROM d.event_id \
             JOIN copy_slots s ON e.unit_id = s.unit_id \
             WHERE NOT e.is_bot AND e.ts >= {lo} AND e.ts < {hi} \
             AND e.ts >= s.lo AND e.ts < s.cutoff), \
             merged AS (SELECT slot, event_id, MIN(ts) AS ts, MAX(value) AS value, \
             MAX(type) AS type{max_props} FROM raw GROUP BY slot, event_id) \
             SELECT e.slot AS slot, CAST(1 AS BIGINT) AS sign, e.ts AS ts, e.value AS value{filters} \
             FROM merged e \
             UNION ALL \
             SELECT e.slot AS slot, CAST(-1 AS BIGINT) AS sign, e.ts AS ts, e.value AS value{filters} \
             FROM raw e"
        );
        let batches = super::collect(ctx, sources, &sql).await?;
        let mut matched = vec![false; self.parts.len()];
        for batch in &batches {
            let slot = ints(batch, "slot")?;
            let slot = slot.as_primitive::<Int64Type>();
            let sign = ints(batch, "sign")?;
            let sign = sign.as_primitive::<Int64Type>();
            let ts = ints(batch, "ts")?;
            let ts = ts.as_primitive::<Int64Type>();
            let (values, flags) = self.columns(batch)?;
            for row in 0..batch.num_rows() {
                if ts.is_null(row) || slot.is_null(row) {
                    continue;
                }
                let Ok(s) = u32::try_from(slot.value(row)) else {
                    continue;
                };
                if s as usize >= self.slots.len() {
                    continue;
                }
                for (m, f) in matched.iter_mut().zip(&flags) {
                    *m = f.is_valid(row) && f.value(row);
                }
                let value = values.is_valid(row).then(|| values.value(row));
                self.add(s, ts.value(row), value, &matched, sign.value(row));
            }
        }
        ctx.deregister_table("copies")?;
        ctx.deregister_table("copy_slots")?;
        Ok(())
    }

    /// Per spec and variant code, the events counted; the fold's tables
    /// are freed.
    pub(super) fn into_volume(self) -> Vec<Vec<i64>> {
        self.volume
    }

    /// Per spec, per metric of the spec (in its order), per variant code:
    /// the statistics of the units entering the metric's sample at this
    /// check (each unit's value as the analysis computes it,
    /// [`plan::unit_expr`], capped at the metric's pooled percentile when
    /// it is winsorized).
    pub(super) fn samples(&self) -> Result<Vec<Vec<Vec<Acc>>>> {
        let n = self.parts.len();
        let mut out: Vec<Vec<Vec<Acc>>> = self
            .specs
            .iter()
            .map(|c| {
                c.metrics
                    .iter()
                    .map(|&j| {
                        let kind = self.planned[j].metric.kind;
                        (0..c.spec.variants.len()).map(|_| Acc::new(kind)).collect()
                    })
                    .collect()
            })
            .collect();
        // Winsorized metrics' values, kept until their caps are known:
        // per spec and metric of the spec.
        let mut held: HashMap<(usize, usize), Vec<UnitValue>> = HashMap::default();
        for slot in &self.slots {
            if slot.acc == NONE {
                continue;
            }
            let e = slot.eidx as usize;
            let c = &self.specs[e];
            let values = &self.values[slot.acc as usize * n..][..n];
            for (m, &j) in c.metrics.iter().enumerate() {
                if !enters(self.entering[e][m], slot.first) {
                    continue;
                }
                let p = &self.planned[j];
                let Some((y, x)) = unit_value(p.metric.kind, &p.cols, values) else {
                    continue;
                };
                if p.metric.winsorize.is_some() {
                    held.entry((e, m)).or_default().push((slot.code, y, x));
                } else {
                    out[e][m][slot.code as usize].push(y, x)?;
                }
            }
        }
        for ((e, m), rows) in held {
            let j = self.specs[e].metrics[m];
            let p = &self.planned[j];
            let w = p.metric.winsorize.unwrap_or(1.0);
            let ratio = p.metric.kind == MetricType::Ratio;
            let cap_y = percentile_cont(w, rows.iter().map(|r| r.1).collect());
            let cap_x = if ratio {
                percentile_cont(w, rows.iter().map(|r| r.2).collect())
            } else {
                None
            };
            for (code, y, x) in rows {
                out[e][m][code as usize].push(capped(y, cap_y), capped(x, cap_x))?;
            }
        }
        Ok(out)
    }
}

/// One unit's value of a metric: its variant code, `y` and `x`.
type UnitValue = (u32, f64, f64);

/// A unit's value of a metric from its parts' values (`cols` the metric's
/// parts), as [`plan::unit_expr`] computes it: `(y, x)`, `x` a ratio's
/// denominator (else 0); `None` for a unit the metric leaves out (a mean
/// metric's unit without a matching event with a value).
fn unit_value(kind: MetricType, cols: &[usize], values: &[f64]) -> Option<(f64, f64)> {
    let v = |i: usize| {
        cols.get(i)
            .and_then(|&c| values.get(c))
            .copied()
            .unwrap_or(0.0)
    };
    match kind {
        MetricType::Mean => (v(1) > 0.0).then(|| (v(0) / v(1), 0.0)),
        MetricType::Ratio => Some((v(0), v(1))),
        MetricType::Binomial => Some((if v(0) > 0.0 { 1.0 } else { 0.0 }, 0.0)),
        _ => Some((v(0), 0.0)),
    }
}

/// `v` capped at `cap` as [`plan::capped`] caps it (no cap when it is not
/// finite).
fn capped(v: f64, cap: Option<f64>) -> f64 {
    match cap {
        Some(cap) if cap.is_finite() && v > cap => cap,
        _ => v,
    }
}

/// The `p` percentile of `values` as the engine's `percentile_cont`
/// computes it, so that the cap is the analysis's: at rank `p·(n − 1)` of
/// the sorted values, interpolated linearly between the closest ranks with
/// a weight truncated to millionths; `None` without values.
fn percentile_cont(p: f64, mut values: Vec<f64>) -> Option<f64> {
    /// The engine's `INTERPOLATION_PRECISION`.
    const PRECISION: f64 = 1_000_000.0;
    values.sort_unstable_by(f64::total_cmp);
    let (first, last) = (values.first()?, values.last()?);
    if values.len() == 1 || p == 0.0 {
        return Some(*first);
    }
    if p == 1.0 {
        return Some(*last);
    }
    let rank = p * (values.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (values[lo], values[hi.min(values.len() - 1)]);
    if lo == hi {
        return Some(a);
    }
    let weight = ((rank - lo as f64) * PRECISION) as usize as f64 / PRECISION;
    Some(a + (b - a) * weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Float64Array;
    use rand::{Rng, SeedableRng};

    /// The cap of a winsorized metric is the engine's `percentile_cont`.
    #[tokio::test]
    async fn percentile_is_that_of_sql() {
        let ctx = SessionContext::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in [1usize, 2, 3, 10, 101, 1000] {
            // Few distinct values: ties, as counts have.
            let values: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..20u32)) * 0.5)
                .collect();
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, false)]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Float64Array::from(values.clone()))],
            )
            .unwrap();
            let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
            ctx.deregister_table("t").unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
            for p in [0.0, 0.05, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let sql =
                    format!("SELECT percentile_cont({p:?}) WITHIN GROUP (ORDER BY v) AS c FROM t");
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let want = cast(batches[0].column(0), &DataType::Float64).unwrap();
                let want = want.as_primitive::<Float64Type>().value(0);
                let got = percentile_cont(p, values.clone()).unwrap();
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "n {n}, p {p}: {got} against {want}"
                );
            }
        }
        assert_eq!(percentile_cont(0.5, vec![]), None);
        assert_eq!(percentile_cont(0.9, vec![2.0]), Some(2.0));
    }

    #[test]
    fn unit_values_are_those_of_the_sql_expressions() {
        let parts = [3.0, 2.0, 0.0];
        assert_eq!(
            unit_value(MetricType::Mean, &[0, 1], &parts),
            Some((1.5, 0.0))
        );
        assert_eq!(unit_value(MetricType::Mean, &[0, 2], &parts), None);
        assert_eq!(
            unit_value(MetricType::Ratio, &[0, 2], &parts),
            Some((3.0, 0.0))
        );
        assert_eq!(
            unit_value(MetricType::Binomial, &[1], &parts),
            Some((1.0, 0.0))
        );
        assert_eq!(
            unit_value(MetricType::Binomial, &[2], &parts),
            Some((0.0, 0.0))
        );
        assert_eq!(unit_value(MetricType::Sum, &[0], &parts), Some((3.0, 0.0)));
        assert_eq!(capped(5.0, Some(4.0)), 4.0);
        assert_eq!(capped(3.0, Some(4.0)), 3.0);
        assert_eq!(capped(5.0, Some(f64::INFINITY)), 5.0);
        assert_eq!(capped(5.0, None), 5.0);
    }

    /// Distinct events of one unit have distinct keys, and a null id is a
    /// key of its own.
    #[test]
    fn event_keys_tell_events_and_units_apart() {
        let (a, b) = (unit_key("a"), unit_key("b"));
        assert_ne!(a, b);
        assert_eq!(event_key(a, Some("e1")), event_key(a, Some("e1")));
        assert_ne!(event_key(a, Some("e1")), event_key(b, Some("e1")));
        assert_ne!(event_key(a, Some("e1")), event_key(a, Some("e2")));
        assert_ne!(event_key(a, None), event_key(a, Some("")));
        assert_eq!(event_key(a, None), event_key(a, None));
    }
}
