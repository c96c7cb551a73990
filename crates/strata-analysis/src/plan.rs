//! Compiles metric definitions to SQL over the canonical `exposures`,
//! `events`, `units` and `unit_values` tables.
//!
//! The plan has three stages, each one SQL statement that DataFusion (or any
//! SQL engine with window-free aggregates) can run:
//!
//! 1. **units**: one row per exposed unit of the experiment: its variant at
//!    first exposure, first exposure time, number of distinct variants seen,
//!    opt-out flag and segment attributes.
//!
//!    Before stage 2, units whose activity goes over a limit of the
//!    registry's bot detection are dropped from `units`
//!    ([`bot_units_sql`]), so that no later stage sees them.
//! 2. **unit values**: events joined to units, deduplicated by `event_id`,
//!    reduced to one row per unit with one column per metric *part* (a count
//!    or a sum of matching events in a window, zero-filled by a left join,
//!    or the list of values a quantile metric reads).
//! 3. **statistics**: per variant (and segment), `COUNT`, `AVG`, `VAR_POP`
//!    and `COVAR_POP` of the per-unit values: the centred moments that
//!    strata-stats takes.

use crate::metrics::{
    BotDetection, EventTypes, Filter, Metric, MetricType, Operators, Predicate, Scalar,
};
use crate::source::{literal, literal_list};
use crate::spec::AnalysisMode;

/// Nanoseconds per second.
pub(crate) const NS: i64 = 1_000_000_000;

/// What a part aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Agg {
    /// Number of matching events.
    Count,
    /// Sum of `value` of matching events.
    Sum,
    /// The list of `value`s of matching events (a quantile metric's values,
    /// gathered in the same pass instead of a second scan of the events).
    Values,
}

/// Which events of a unit a part covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Window {
    /// The analysis window: from first exposure (less skew, not before start) to the end.
    Analysis,
    /// The CUPED pre-period `[start − days, start)`.
    Pre,
    /// The novelty early window: analysis window, less than `novelty_days` after exposure.
    Early,
    /// The novelty late window: analysis window, `novelty_days` or more after exposure.
    Late,
}

/// One per-unit column: an aggregate of matching events in a window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    pub agg: Agg,
    pub filter: Filter,
    /// Only events with a non-null value (mean metrics).
    pub needs_value: bool,
    pub window: Window,
}

/// Time bounds of one analysis, in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub start: i64,
    /// `min(end, as_of)`.
    pub end: i64,
    /// Start of the CUPED pre-period, if CUPED is on.
    pub pre_start: Option<i64>,
    pub skew: i64,
    pub novelty: i64,
    /// Exposures before this instant are not the experiment's (the spec's
    /// `exposures_since_start`); none: every exposure before the end counts.
    pub exposures_from: Option<i64>,
}

fn scalar(s: &Scalar) -> String {
    match s {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Number(x) => format!("{x:?}"),
        Scalar::String(s) => literal(s),
    }
}

fn predicate(col: &str, p: &Predicate) -> Vec<String> {
    let ops = match p {
        Predicate::Eq(s) => Operators {
            eq: Some(s.clone()),
            ..Operators::default()
        },
        Predicate::Ops(o) => o.clone(),
    };
    let mut out = Vec::new();
    for (op, v) in [
        ("=", &ops.eq),
        ("<>", &ops.ne),
        (">", &ops.gt),
        (">=", &ops.gte),
        ("<", &ops.lt),
        ("<=", &ops.lte),
    ] {
        if let Some(v) = v {
            out.push(format!("{col} {op} {}", scalar(v)));
        }
    }
    let list = |v: &Vec<Scalar>| v.iter().map(scalar).collect::<Vec<_>>().join(", ");
    if let Some(v) = &ops.in_ {
        out.push(format!("{col} IN ({})", list(v)));
    }
    if let Some(v) = &ops.not_in {
        out.push(format!("{col} NOT IN ({})", list(v)));
    }
    out
}

/// The SQL condition of a filter on the events alias `e`; `properties` is
/// the global list of property names (column `prop_i`).
pub(crate) fn filter_sql(filter: &Filter, properties: &[String]) -> String {
    let mut conds = Vec::new();
    match &filter.event_type {
        Some(EventTypes::One(t)) => conds.push(format!("e.type = {}", literal(t))),
        Some(EventTypes::Many(ts)) => conds.push(format!(
            "e.type IN ({})",
            literal_list(ts.iter().map(String::as_str))
        )),
        None => {}
    }
    if let Some(p) = &filter.value {
        conds.extend(predicate("e.value", p));
    }
    for (k, p) in &filter.properties {
        let i = properties.iter().position(|x| x == k).unwrap_or(usize::MAX);
        conds.extend(predicate(&format!("e.prop_{i}"), p));
    }
    if conds.is_empty() {
        "true".into()
    } else {
        conds
            .into_iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// Property names referenced by filters, in first-use order.
pub(crate) fn properties_of<'a>(filters: impl IntoIterator<Item = &'a Filter>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in filters {
        for k in f.properties.keys() {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Filters of a metric (a ratio's two parts, else its own filter).
pub(crate) fn metric_filters(m: &Metric) -> Vec<&Filter> {
    match (&m.numerator, &m.denominator) {
        (Some(n), Some(d)) => vec![&n.filter, &d.filter],
        _ => vec![&m.filter],
    }
}

/// The parts a metric needs in a window: one for binomial/count/sum, two
/// (sum, count) for mean, two (numerator, denominator) for ratio, none for
/// quantile.
pub(crate) fn parts_of(m: &Metric, window: Window) -> Vec<Part> {
    let part = |agg, filter: &Filter, needs_value| Part {
        agg,
        filter: filter.clone(),
        needs_value,
        window,
    };
    let agg_of = |t: MetricType| {
        if t == MetricType::Sum {
            Agg::Sum
        } else {
            Agg::Count
        }
    };
    match m.kind {
        MetricType::Binomial | MetricType::Count => vec![part(Agg::Count, &m.filter, false)],
        MetricType::Sum => vec![part(Agg::Sum, &m.filter, false)],
        MetricType::Mean => vec![
            part(Agg::Sum, &m.filter, true),
            part(Agg::Count, &m.filter, true),
        ],
        MetricType::Ratio => match (&m.numerator, &m.denominator) {
            (Some(n), Some(d)) => vec![
                part(agg_of(n.kind), &n.filter, false),
                part(agg_of(d.kind), &d.filter, false),
            ],
            _ => vec![],
        },
        // The caller adds the values part when it gathers values per unit.
        MetricType::Quantile => vec![],
    }
}

/// The part holding a quantile metric's values in the analysis window.
pub(crate) fn values_part(m: &Metric) -> Part {
    Part {
        agg: Agg::Values,
        filter: m.filter.clone(),
        needs_value: true,
        window: Window::Analysis,
    }
}

/// Stage 1: the units of the experiment (before the known-variant filter).
///
/// A unit's variant and segments are those of its first exposure (ties on
/// `ts` broken by variant). An ordered `first_value` costs more than the
/// rest of the stage together, yet for nearly every unit all exposures agree
/// on them; so this takes `MIN` of each and flags as `ambiguous` the units
/// whose exposures disagree on one (or have it null on some only), which
/// [`units_first_sql`] then redoes with `first_value`.
///
/// `multi_variant` is `MIN <> MAX` rather than `COUNT(DISTINCT …) > 1`:
/// next to other aggregates DataFusion evaluates a distinct count with one
/// hash set per group, which costs gigabytes at a million units.
pub(crate) fn units_sql(key: &str, mode: AnalysisMode, n_segments: usize, b: &Bounds) -> String {
    let v = variant_column(mode);
    let agrees =
        |c: &str| format!("(MIN({c}) = MAX({c}) AND COUNT({c}) = COUNT(*) OR COUNT({c}) = 0)");
    let segs: String = (0..n_segments)
        .map(|i| format!(", MIN(seg_{i}) AS seg_{i}"))
        .collect();
    let ambiguous = std::iter::once(agrees(v))
        .chain((0..n_segments).map(|i| agrees(&format!("seg_{i}"))))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT unit_id, MIN({v}) AS variant, MIN(ts) AS first_ts, \
         MIN({v}) <> MAX({v}) AS multi_variant, bool_or(opted_out) AS opted_out{segs}, \
         NOT ({ambiguous}) AS ambiguous \
         FROM {exposures} GROUP BY unit_id",
        exposures = experiment_exposures(key, b),
    )
}

/// Stage 1, for units flagged `ambiguous` by [`units_sql`] (registered as
/// `units_all`): their variant and segments from their first exposure.
pub(crate) fn units_first_sql(
    key: &str,
    mode: AnalysisMode,
    n_segments: usize,
    b: &Bounds,
) -> String {
    let v = variant_column(mode);
    let first_segs: String = (0..n_segments)
        .map(|i| format!(", first_value(seg_{i} ORDER BY ts, {v}) AS seg_{i}"))
        .collect();
    let segs: String = (0..n_segments)
        .map(|i| format!(", CASE WHEN u.ambiguous THEN f.seg_{i} ELSE u.seg_{i} END AS seg_{i}"))
        .collect();
    format!(
        "SELECT u.unit_id, CASE WHEN u.ambiguous THEN f.variant ELSE u.variant END AS variant, \
         u.first_ts, u.multi_variant, u.opted_out{segs}, u.ambiguous \
         FROM units_all u LEFT JOIN (\
         SELECT unit_id, first_value({v} ORDER BY ts, {v}) AS variant{first_segs} \
         FROM {exposures} \
         AND unit_id IN (SELECT unit_id FROM units_all WHERE ambiguous) GROUP BY unit_id\
         ) f ON u.unit_id = f.unit_id",
        exposures = experiment_exposures(key, b),
    )
}

/// Stage 1 under per-protocol analysis, over `units_all`: a unit is also
/// opted out when one of its events before the end says so (an event's
/// `opted_out`), as when one of its exposures does.
pub(crate) fn units_opted_out_by_events_sql(n_segments: usize, b: &Bounds) -> String {
    let segs: String = (0..n_segments).map(|i| format!(", u.seg_{i}")).collect();
    format!(
        "SELECT u.unit_id, u.variant, u.first_ts, u.multi_variant, \
         u.opted_out OR o.unit_id IS NOT NULL AS opted_out{segs}, u.ambiguous \
         FROM units_all u LEFT JOIN (\
         SELECT DISTINCT unit_id FROM events WHERE opted_out AND ts < {end}\
         ) o ON u.unit_id = o.unit_id",
        end = b.end
    )
}

/// The experiment's exposures before the end: both passes of stage 1 must
/// read the same rows.
fn experiment_exposures(key: &str, b: &Bounds) -> String {
    let from = b
        .exposures_from
        .map_or(String::new(), |t| format!(" AND ts >= {t}"));
    format!(
        "exposures WHERE experiment = {key}{from} AND ts < {end}",
        key = literal(key),
        end = b.end
    )
}

/// The held-out units of the global holdout's period `[from, end)`: units
/// whose holdout exposure (`experiment`) says `variant` (the held-out one).
pub(crate) fn held_out_units_sql(experiment: &str, variant: &str, from: i64, end: i64) -> String {
    format!(
        "SELECT DISTINCT unit_id FROM exposures WHERE experiment = {e} AND variant = {v} \
         AND ts >= {from} AND ts < {end}",
        e = literal(experiment),
        v = literal(variant),
    )
}

/// Per treatment variant of `treatments` (a table of `experiment`,
/// `variant`), the units of `held_out` exposed to it in `[from, end)`, and
/// with `experiment` and `variant` null the units exposed to any of them
/// (`GROUPING SETS`, one scan).
pub(crate) fn contaminated_units_sql(
    held_out: &str,
    treatments: &str,
    from: i64,
    end: i64,
) -> String {
    format!(
        "SELECT e.experiment, e.variant, COUNT(DISTINCT e.unit_id) AS n \
         FROM exposures e JOIN {held_out} h ON e.unit_id = h.unit_id \
         JOIN {treatments} t ON e.experiment = t.experiment AND e.variant = t.variant \
         WHERE e.ts >= {from} AND e.ts < {end} \
         GROUP BY GROUPING SETS ((e.experiment, e.variant), ())"
    )
}

/// The exposures' column a unit's variant is taken from under `mode`.
pub(crate) fn variant_column(mode: AnalysisMode) -> &'static str {
    match mode {
        AnalysisMode::Itt => "assigned_variant",
        AnalysisMode::PerProtocol => "variant",
    }
}

/// The event types every part is restricted to, when all parts name types.
fn scanned_types(parts: &[Part]) -> Option<Vec<&str>> {
    scanned_types_of(parts.iter().map(|p| &p.filter))
}

/// The event types every filter is restricted to, when all filters name types.
fn scanned_types_of<'a>(filters: impl IntoIterator<Item = &'a Filter>) -> Option<Vec<&'a str>> {
    let mut types: Vec<&str> = Vec::new();
    for f in filters {
        for n in f.event_type.as_ref()?.names() {
            if !types.contains(&n) {
                types.push(n);
            }
        }
    }
    (!types.is_empty()).then_some(types)
}

/// Stage 2a: per-unit sums of each part as columns `p{i}`, one row per unit
/// with matching events (`uidx`, `p0`, …).
///
/// Units carry a dense integer key `uidx`: events are joined to units once on
/// the string `unit_id`, and every later aggregate and join uses the integer.
/// Each part is an aggregate with a `FILTER` clause, all computed in one pass
/// over the events. With `dedup`, events are first reduced to one row per
/// (unit, `event_id`) carrying only the columns the filters read, so the
/// largest aggregate of the plan (one group per event) holds a handful of
/// accumulators whatever the number of metrics.
///
/// `unit_keys` holds the columns of `units` the join needs (a narrow build
/// side is quicker to hash and copy). `slice` is a condition on the events'
/// `part` column from [`slice_conditions`] (see [`STRADDLING_UNITS_SQL`]).
///
/// With `fused`, the parts are one aggregate, [`crate::fused::PartsUdaf`]
/// (its struct column `parts` holds `p0`, `p1`, …), instead of one `FILTER`
/// aggregate each; the caller checks that it applies.
pub(crate) fn unit_parts_sql(
    parts: &[Part],
    properties: &[String],
    b: &Bounds,
    dedup: bool,
    slice: Option<&str>,
    fused: bool,
) -> String {
    let lo = b.pre_start.unwrap_or(b.start).min(b.start);
    // Restrict the scan to the event types some part needs, when all parts
    // name types. The fused aggregate over unique ids skips other types and
    // bots' events itself: with only the time range left to filter on, whole
    // batches pass the filter uncopied (a row filter copies every column of
    // the rows it keeps, and costs more than the rows it drops; the time
    // range stays, as it prunes files and row groups).
    let fused_filters = fused && !dedup;
    let type_cond = match scanned_types(parts) {
        Some(types) if !fused_filters => format!(" AND type IN ({})", literal_list(types)),
        _ => String::new(),
    };
    let bot_cond = if fused_filters { "" } else { "NOT is_bot AND " };
    let slice_cond = slice.map_or(String::new(), |c| format!(" AND {c}"));
    // Unit columns (`lo`, `first_ts`) come from `units` (alias u) or, after
    // deduplication, from the deduplicated rows (alias e).
    let u = if dedup { "e" } else { "u" };
    let window = |w: Window| match w {
        Window::Analysis => format!("e.ts >= {u}.lo"),
        Window::Pre => format!("e.ts < {}", b.start),
        Window::Early => format!("e.ts >= {u}.lo AND e.ts < {u}.first_ts + {}", b.novelty),
        Window::Late => format!("e.ts >= {u}.lo AND e.ts >= {u}.first_ts + {}", b.novelty),
    };
    let aggs: Vec<String> = if fused {
        vec![format!(
            "{}(e.type, e.ts, {u}.lo, {u}.first_ts, e.value, {bot}) AS parts",
            crate::fused::NAME,
            bot = if fused_filters { "e.is_bot" } else { "false" },
        )]
    } else {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut cond = format!(
                    "{} AND {}",
                    window(p.window),
                    filter_sql(&p.filter, properties)
                );
                if p.needs_value {
                    cond.push_str(" AND e.value IS NOT NULL");
                }
                let agg = match p.agg {
                    Agg::Count => "COUNT(*)",
                    Agg::Sum => "SUM(e.value)",
                    Agg::Values => "ARRAY_AGG(e.value)",
                };
                format!("{agg} FILTER (WHERE {cond}) AS p{i}")
            })
            .collect()
    };
    let props: String = (0..properties.len())
        .map(|i| format!(", prop_{i}"))
        .collect();
    let ev = format!(
        "WITH ev AS (SELECT event_id, unit_id, type, ts, value, is_bot{props} FROM events \
         WHERE {bot_cond}ts >= {lo} AND ts < {end}{type_cond}{slice_cond})",
        end = b.end,
    );
    if dedup {
        // Duplicates are copies of one event; the kept row takes the
        // earliest `ts` and the largest of each other column. The unit's
        // `lo` and `first_ts` are functions of `uidx`: as group keys they
        // cost less than accumulators (30.6 s -> 18.1 s for this stage at
        // 100 M events, `bench/analysis/plan_variants.py`).
        let dprops: String = (0..properties.len())
            .map(|i| format!(", MAX(e.prop_{i}) AS prop_{i}"))
            .collect();
        format!(
            "{ev}, d AS (SELECT u.uidx, e.event_id, u.lo, u.first_ts, MIN(e.ts) AS ts, \
             MAX(e.value) AS value, MAX(e.type) AS type{dprops} \
             FROM ev e JOIN unit_keys u ON e.unit_id = u.unit_id \
             GROUP BY u.uidx, e.event_id, u.lo, u.first_ts) \
             SELECT e.uidx, {} FROM d e GROUP BY e.uidx",
            aggs.join(", ")
        )
    } else {
        format!(
            "{ev} SELECT u.uidx, {} FROM ev e JOIN unit_keys u ON e.unit_id = u.unit_id GROUP BY u.uidx",
            aggs.join(", ")
        )
    }
}

/// One look of a shared rollup ([`crate::rollup`]): the experiment, its
/// bounds, whether its parts have novelty windows, and its analysis mode
/// (which variant column its stage 1 reads).
#[derive(Debug, Clone)]
pub(crate) struct CutLook {
    pub key: String,
    pub bounds: Bounds,
    pub novelty: bool,
    pub mode: AnalysisMode,
}

/// Per unit, its first exposure in each look `i` (column `f{i}`, NULL when
/// it has none), over the rows stage 1 of that look reads ([`units_sql`]):
/// what the shared scan of the exposures ([`crate::rollup`]) finds in this
/// process, as SQL, against which it is tested.
#[cfg(test)]
pub(crate) fn first_exposures_sql(looks: &[CutLook]) -> String {
    let cols: Vec<String> = looks
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let from = l
                .bounds
                .exposures_from
                .map_or(String::new(), |t| format!(" AND ts >= {t}"));
            format!(
                "MIN(ts) FILTER (WHERE experiment = {key} AND ts < {end}{from}) AS f{i}",
                key = literal(&l.key),
                end = l.bounds.end
            )
        })
        .collect();
    let keys = literal_list(looks.iter().map(|l| l.key.as_str()));
    let end = looks.iter().map(|l| l.bounds.end).max().unwrap_or(0);
    format!(
        "SELECT unit_id, {} FROM exposures WHERE experiment IN ({keys}) AND ts < {end} \
         GROUP BY unit_id",
        cols.join(", ")
    )
}

/// Shared rollup, step 3 (`rollup_by_uidx`): the events with
/// `lo ≤ ts < hi` of the units of `unit_cuts`, deduplicated per unit by
/// `event_id` with `dedup` (as [`unit_parts_sql`] does), reduced to one row
/// per unit (`uidx`) and segment (`seg`, the largest cut point at or before
/// the event, by [`crate::rollup::CUT_FLOOR`]) with one column `r{k}` per
/// key: a count, a sum or the list of values of the matching events.
/// `slice` is a slice's number and its condition on `part`
/// ([`slice_conditions`]); its number is the column `slice`.
///
/// `range` is the condition on `ts` of the events read. With `all_units`,
/// every unit with events is rolled up (a LEFT join: a unit with no cut
/// points of its own has the common ones), and `uidx` is its `unit_id`.
pub(crate) fn rollup_sql(
    keys: &[crate::rollup::Key],
    properties: &[String],
    range: &str,
    dedup: bool,
    slice: Option<(usize, &str)>,
    all_units: bool,
) -> String {
    let type_cond = match scanned_types_of(keys.iter().map(|k| &k.filter)) {
        Some(types) => format!(" AND type IN ({})", literal_list(types)),
        None => String::new(),
    };
    let slice_cond = slice.map_or(String::new(), |(_, c)| format!(" AND {c}"));
    let props: String = (0..properties.len())
        .map(|i| format!(", prop_{i}"))
        .collect();
    let eprops: String = (0..properties.len())
        .map(|i| format!(", e.prop_{i}"))
        .collect();
    let aggs: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(k, key)| {
            let mut cond = filter_sql(&key.filter, properties);
            if key.needs_value {
                cond.push_str(" AND e.value IS NOT NULL");
            }
            let agg = match key.agg {
                Agg::Count => "COUNT(*)",
                Agg::Sum => "SUM(e.value)",
                Agg::Values => "ARRAY_AGG(e.value)",
            };
            format!("{agg} FILTER (WHERE {cond}) AS r{k}")
        })
        .collect();
    let mut sql = format!(
        "WITH ev AS (SELECT event_id, unit_id, type, ts, value{props} FROM events \
         WHERE NOT is_bot AND ({range}){type_cond}{slice_cond}), \
         s AS (SELECT {key} AS uidx, e.event_id, {cut}(u.cuts, e.ts) AS seg, e.type, e.value{eprops} \
         FROM unit_cuts u {join} ev e ON e.unit_id = u.unit_id)",
        cut = crate::rollup::CUT_FLOOR,
        key = if all_units { "e.unit_id" } else { "u.uidx" },
        // The units first: a hash join holds its left side in memory,
        // and the units are the small side (one row each, the events
        // of a day are many).
        join = if all_units { "RIGHT JOIN" } else { "JOIN" },
    );
    let from = if dedup {
        // The earliest copy's segment: the cut floor never decreases with
        // time, so the least segment is that of the least time.
        let dprops: String = (0..properties.len())
            .map(|i| format!(", MAX(prop_{i}) AS prop_{i}"))
            .collect();
        sql.push_str(&format!(
            ", d AS (SELECT uidx, event_id, MIN(seg) AS seg, MAX(value) AS value, \
             MAX(type) AS type{dprops} FROM s GROUP BY uidx, event_id)"
        ));
        "d"
    } else {
        "s"
    };
    format!(
        "{sql} SELECT e.uidx, e.seg, CAST({n} AS BIGINT) AS slice, {} FROM {from} e \
         GROUP BY e.uidx, e.seg",
        aggs.join(", "),
        n = slice.map_or(0, |(n, _)| n),
    )
}

/// Shared rollup over slices: the number of units with rows from more than
/// one slice (see [`STRADDLING_UNITS_SQL`]), as `n`.
pub(crate) const STRADDLING_SEGMENTS_SQL: &str = "SELECT COUNT(*) AS n FROM (SELECT uidx \
     FROM rollup_by_uidx GROUP BY uidx HAVING MIN(slice) <> MAX(slice))";

/// Shared rollup, step 4 (`rollup`): the rows of `rollup_by_uidx` keyed by
/// `unit_id`, which each experiment's units join on.
pub(crate) fn rollup_units_sql(n_keys: usize) -> String {
    let cols: String = (0..n_keys).map(|k| format!(", r.r{k}")).collect();
    format!(
        "SELECT k.unit_id, r.seg{cols} FROM rollup_by_uidx r JOIN unit_cuts k ON r.uidx = k.uidx"
    )
}

/// A kept rollup's pass over every unit (`rollup_by_uidx`, whose `uidx`
/// is then the `unit_id`), in the rollup's columns.
pub(crate) fn rollup_units_by_id_sql(n_keys: usize) -> String {
    let cols: String = (0..n_keys).map(|k| format!(", r{k}")).collect();
    format!("SELECT uidx AS unit_id, seg{cols} FROM rollup_by_uidx")
}

/// The rows of `rollup_new` of the day `[lo, hi)`, in a fixed order.
pub(crate) fn rollup_day_sql(lo: i64, hi: i64) -> String {
    format!("SELECT * FROM rollup_new WHERE seg >= {lo} AND seg < {hi} ORDER BY unit_id, seg")
}

/// No rows, in the columns of [`bot_candidate_events_sql`].
pub(crate) const BOT_EVENTS_SCHEMA_SQL: &str =
    "SELECT event_id, unit_id, type, ts, is_bot FROM events WHERE false";

/// The units of `unit_cuts` the bot detection found (`bot_units`).
pub(crate) const BOT_CANDIDATES_SQL: &str =
    "SELECT unit_id FROM unit_cuts WHERE uidx IN (SELECT uidx FROM bot_units)";

/// The events the bot detection counts (not flagged, `lo ≤ ts < hi`) of
/// the shared bot detection's candidate units: all an experiment's exact
/// detection reads ([`bot_units_in_sql`]).
pub(crate) fn bot_candidate_events_sql(lo: i64, hi: i64) -> String {
    format!(
        "SELECT event_id, unit_id, type, ts, is_bot FROM events WHERE NOT is_bot \
         AND ts >= {lo} AND ts < {hi} AND unit_id IN (SELECT unit_id FROM {}) \
         ORDER BY unit_id, ts, event_id",
        crate::rollup::BOT_CANDIDATES
    )
}

/// Nanoseconds per minute: the bucket of the bot detection's per-minute limit.
const MINUTE_NS: i64 = 60 * NS;

/// Nanoseconds per day: the per-day bucket.
const DAY_NS: i64 = 86_400 * NS;

/// A `CASE` on the event type giving the limit of each type (`NULL`: no
/// limit), from the registry's bot detection.
fn limit_case(d: &BotDetection, col: &str, per_day: bool) -> String {
    let pick = |(m, day): (Option<u64>, Option<u64>)| if per_day { day } else { m };
    let sql = |l: Option<u64>| l.map_or("CAST(NULL AS BIGINT)".to_string(), |l| l.to_string());
    let default = sql(if per_day { d.per_day.0 } else { d.per_minute.0 });
    let whens: String = d
        .event_types
        .keys()
        .map(|t| format!(" WHEN {} THEN {}", literal(t), sql(pick(d.limits(t)))))
        .collect();
    if whens.is_empty() {
        default
    } else {
        format!("CASE {col}{whens} ELSE {default} END")
    }
}

/// The heuristic bot detection: the `uidx` of every unit of `keys` (a
/// table with `unit_id` and `uidx`, such as `unit_keys`) with more events
/// of one type than that type's limit in one UTC minute bucket
/// (`⌊ts / 60 s⌋`) or one UTC day bucket (`⌊ts / 86 400 s⌋`), counting
/// events with `start ≤ ts < end` not flagged `is_bot`.
///
/// Buckets are fixed, not sliding: a count per group is exact and as cheap
/// as a `GROUP BY`, where a sliding window needs every unit's events in
/// time order. So a burst of more than twice the per-minute limit within
/// any 60 seconds is always caught, and one of more than the limit may go
/// uncaught when it straddles two minutes.
///
/// Cost: one aggregate per unit, type and active day over the window's
/// events; minutes are counted only for the (unit, type, day) cells with
/// more events than the per-minute limit, which are few — so memory grows
/// with active unit-days, not with active unit-minutes.
///
/// With `distinct_ids`, copies of one event (the same `event_id`) in the
/// same bucket count once; without, every row counts, which is the same
/// count when ids are unique and never less otherwise — so the engine runs
/// this without first, and with only for the units it finds.
pub(crate) fn bot_units_sql(
    det: &BotDetection,
    b: &Bounds,
    keys: &str,
    distinct_ids: bool,
) -> String {
    bot_units_in_sql(det, b, keys, distinct_ids, "events")
}

/// [`bot_units_sql`] over the rows of table `events` (the canonical
/// events, or a shared rollup's events of its candidate units). With
/// `keys` empty, every unit with events is counted, its `unit_id` as its
/// `uidx`.
pub(crate) fn bot_units_in_sql(
    det: &BotDetection,
    b: &Bounds,
    keys: &str,
    distinct_ids: bool,
    events: &str,
) -> String {
    let from = if keys.is_empty() {
        format!("SELECT e.event_id, e.unit_id AS uidx, e.type, e.ts FROM {events} e")
    } else {
        format!(
            "SELECT e.event_id, u.uidx, e.type, e.ts FROM {events} e \
             JOIN {keys} u ON e.unit_id = u.unit_id"
        )
    };
    // With no default limit, only the types with a limit of their own need scanning.
    let type_cond = if det.per_minute.0.is_none() && det.per_day.0.is_none() {
        let limited: Vec<&str> = det
            .event_types
            .keys()
            .filter(|t| {
                let (m, day) = det.limits(t);
                m.is_some() || day.is_some()
            })
            .map(String::as_str)
            .collect();
        format!(" AND e.type IN ({})", literal_list(limited))
    } else {
        String::new()
    };
    let ev = format!(
        "WITH ev AS ({from} \
         WHERE NOT e.is_bot AND e.ts >= {start} AND e.ts < {end}{type_cond})",
        start = b.start,
        end = b.end,
    );
    // Counts per bucket; with `distinct_ids`, copies of an event count once.
    let counts = |bucket: &str, from: &str| {
        if distinct_ids {
            format!(
                "SELECT uidx, type, b, COUNT(*) AS n FROM (SELECT e.uidx, e.type, {bucket} AS b \
                 FROM {from} GROUP BY e.uidx, e.type, {bucket}, e.event_id) GROUP BY uidx, type, b"
            )
        } else {
            format!(
                "SELECT e.uidx, e.type, {bucket} AS b, COUNT(*) AS n FROM {from} \
                 GROUP BY e.uidx, e.type, {bucket}"
            )
        }
    };
    // The per-day counts are one group per unit, type and active day. Only
    // a (unit, type, day) with more events than the type's per-minute limit
    // can hold a minute over it, so minutes are counted for those few cells
    // alone — never one group per unit and active minute.
    let day = format!("e.ts / {DAY_NS}");
    let minute = format!("e.ts / {MINUTE_NS}");
    let d = counts(&day, "ev e");
    // The few candidate cells are the join's build side (the left input,
    // held in memory): with the events there instead, the join held every
    // event of the window — 2.7 GB at 100 M events, over a 4 GiB limit
    // with the other stages. The planner cannot tell, having no size for
    // either side.
    let m = counts(
        &minute,
        &format!("cand c JOIN ev e ON e.uidx = c.uidx AND e.type = c.type AND {day} = c.b"),
    );
    let (per_minute, per_day) = (
        limit_case(det, "type", false),
        limit_case(det, "type", true),
    );
    format!(
        "{ev}, d AS ({d}), cand AS (SELECT uidx, type, b FROM d WHERE n > {per_minute}), \
         m AS ({m}) \
         SELECT uidx FROM d WHERE n > {per_day} UNION SELECT uidx FROM m WHERE n > {per_minute}"
    )
}

/// The `unit_id` and `uidx` of the units of `units` that [`bot_units_sql`]
/// found (table `bot_units`).
pub(crate) const BOT_KEYS_SQL: &str =
    "SELECT unit_id, uidx FROM units WHERE uidx IN (SELECT uidx FROM bot_units)";

/// Units found by the bot detection (`bot_units`), per variant.
pub(crate) const BOT_UNITS_PER_VARIANT_SQL: &str = "SELECT u.variant AS variant, COUNT(*) AS n      FROM units u JOIN bot_units b ON u.uidx = b.uidx GROUP BY u.variant";

/// `units` without the units the bot detection found (`bot_units`).
pub(crate) const UNITS_WITHOUT_BOTS_SQL: &str =
    "SELECT * FROM units WHERE uidx NOT IN (SELECT uidx FROM bot_units)";

/// Conditions on the events' `part` column, one per group of partition
/// values, that split every row into exactly one slice: the last takes every
/// value not in an earlier group, and nulls, so a partition the listing did
/// not see is still read once.
pub(crate) fn slice_conditions(groups: &[&[String]]) -> Vec<String> {
    let Some((_, earlier)) = groups.split_last() else {
        return Vec::new();
    };
    let values =
        |gs: &[&[String]]| literal_list(gs.iter().flat_map(|g| g.iter().map(String::as_str)));
    let mut out: Vec<String> = earlier
        .iter()
        .map(|g| format!("part IN ({})", values(&[*g])))
        .collect();
    out.push(if earlier.is_empty() {
        "true".to_string()
    } else {
        format!("(part IS NULL OR part NOT IN ({}))", values(earlier))
    });
    out
}

/// Stage 2a over slices: the number of units with rows from more than one
/// slice in the union of the per-slice rows of [`unit_parts_sql`] (table
/// `unit_parts`), as `n`.
///
/// Deduplication is per slice, so the union is the answer only when every
/// unit's events are in one slice (then it has one row per unit, as the
/// unsliced plan): the caller falls back to the unsliced plan otherwise.
pub(crate) const STRADDLING_UNITS_SQL: &str =
    "SELECT COUNT(*) AS n FROM (SELECT uidx FROM unit_parts GROUP BY uidx HAVING COUNT(*) > 1)";

/// Stage 2b: one row per unit of `units` with each part as column `p{i}`,
/// zero-filled from `unit_parts` (the output of stage 2a).
pub(crate) fn unit_values_sql(parts: &[Part], n_segments: usize) -> String {
    let segs: String = (0..n_segments).map(|i| format!(", u.seg_{i}")).collect();
    if parts.is_empty() {
        return format!("SELECT u.unit_id, u.variant, u.first_ts{segs} FROM units u");
    }
    let zero_filled = (0..parts.len())
        .map(|i| match parts[i].agg {
            Agg::Count => format!("COALESCE(a.p{i}, CAST(0 AS BIGINT)) AS p{i}"),
            Agg::Sum => format!("COALESCE(a.p{i}, 0.0) AS p{i}"),
            // No values: NULL (an empty list in the fused form).
            Agg::Values => format!("a.p{i} AS p{i}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT u.unit_id, u.variant, u.first_ts{segs}, {zero_filled} \
         FROM units u LEFT JOIN unit_parts a ON u.uidx = a.uidx"
    )
}

/// Event values of a quantile metric with the unit's variant, deduplicated.
pub(crate) fn quantile_values_sql(
    m: &Metric,
    properties: &[String],
    b: &Bounds,
    dedup: bool,
) -> String {
    let cond = format!(
        "e.ts >= u.lo AND e.value IS NOT NULL AND {}",
        filter_sql(&m.filter, properties)
    );
    let props: String = (0..properties.len())
        .map(|i| format!(", prop_{i}"))
        .collect();
    let base = format!(
        "WITH ev AS (SELECT event_id, unit_id, type, ts, value{props} FROM events \
         WHERE NOT is_bot AND ts >= {start} AND ts < {end}) ",
        start = b.start,
        end = b.end
    );
    if dedup {
        // The variant is a function of the unit: grouping by it too is
        // cheaper than an aggregate over a string column.
        format!(
            "{base}SELECT u.variant AS variant, u.uidx AS uidx, MAX(e.value) AS value FROM ev e \
             JOIN units u ON e.unit_id = u.unit_id WHERE {cond} GROUP BY u.uidx, e.event_id, u.variant"
        )
    } else {
        format!(
            "{base}SELECT u.variant AS variant, u.uidx AS uidx, e.value AS value FROM ev e \
             JOIN units u ON e.unit_id = u.unit_id WHERE {cond}"
        )
    }
}

/// Per-unit value expressions `(y, x)` of a metric whose parts start at
/// column `first`: `x` is the CUPED covariate or the ratio denominator.
pub(crate) struct UnitExpr {
    /// The metric value (or ratio numerator).
    pub y: String,
    /// Covariate or denominator, if any.
    pub x: Option<String>,
    /// Row filter (mean metrics: units with matching events).
    pub filter: Option<String>,
}

/// Builds the per-unit expressions of a metric from its part columns.
pub(crate) fn unit_expr(kind: MetricType, cols: &[usize], cuped_col: Option<usize>) -> UnitExpr {
    let d = |i: usize| format!("CAST(p{i} AS DOUBLE)");
    let value = |i: usize| match kind {
        MetricType::Binomial => format!("CASE WHEN p{i} > 0 THEN 1.0 ELSE 0.0 END"),
        _ => d(i),
    };
    match kind {
        MetricType::Mean => UnitExpr {
            y: format!("{} / {}", d(cols[0]), d(cols[1])),
            x: None,
            filter: Some(format!("p{} > 0", cols[1])),
        },
        MetricType::Ratio => UnitExpr {
            y: d(cols[0]),
            x: Some(d(cols[1])),
            filter: None,
        },
        _ => UnitExpr {
            y: value(cols[0]),
            x: cuped_col.map(value),
            filter: None,
        },
    }
}

/// Registers a canonical input view (`exposures`, `events`) over its
/// source's own columns ([`crate::source`]).
pub(crate) fn create_view_sql(name: &str, select: &str) -> String {
    format!("CREATE VIEW {name} AS {select}")
}

/// Stage 1's counts over `units_all`: units seen in several variants, in a
/// variant outside `known` (an SQL list of the spec's variants), opted out,
/// and whose variant or segments need their first exposure
/// ([`units_first_sql`]).
pub(crate) fn units_diagnosis_sql(known: &str) -> String {
    format!(
        "SELECT SUM(CASE WHEN multi_variant THEN 1 ELSE 0 END) AS multi, \
         SUM(CASE WHEN variant NOT IN ({known}) THEN 1 ELSE 0 END) AS unknown, \
         SUM(CASE WHEN opted_out THEN 1 ELSE 0 END) AS opted, \
         SUM(CASE WHEN ambiguous THEN 1 ELSE 0 END) AS ambiguous FROM units_all"
    )
}

/// Stage 1's result, `units`: the units of `units_all` in one of the
/// `known` variants (opted-out units dropped under per-protocol analysis),
/// each with a dense index `uidx` and the start `lo` of its event window
/// (its first exposure less the clock skew, not before the start).
pub(crate) fn analysed_units_sql(known: &str, mode: AnalysisMode, b: &Bounds) -> String {
    let opted = match mode {
        AnalysisMode::Itt => "",
        AnalysisMode::PerProtocol => " AND NOT opted_out",
    };
    format!(
        "SELECT *, CAST(ROW_NUMBER() OVER () AS BIGINT) AS uidx, \
         CASE WHEN first_ts - {skew} > {start} THEN first_ts - {skew} ELSE {start} END AS lo \
         FROM units_all WHERE variant IN ({known}){opted}",
        skew = b.skew,
        start = b.start
    )
}

/// The columns of `units` that stage 2's join reads.
pub(crate) const UNIT_KEYS_SQL: &str = "SELECT unit_id, uidx, lo, first_ts FROM units";

/// The columns of `units` that stage 2 from a shared rollup reads
/// ([`crate::rollup::stage2`]).
pub(crate) const ROLLUP_UNITS_SQL: &str = "SELECT unit_id, variant, uidx, lo, first_ts FROM units";

/// The variants with units in this look.
pub(crate) const UNIT_VARIANTS_SQL: &str = "SELECT DISTINCT variant FROM units_all";

/// Units per variant.
pub(crate) const UNITS_PER_VARIANT_SQL: &str =
    "SELECT variant, COUNT(*) AS n FROM units GROUP BY variant";

/// The variant names (`column`: assigned or served) among all exposures of
/// experiment `key`, whatever their time.
pub(crate) fn exposure_variants_sql(column: &str, key: &str) -> String {
    format!(
        "SELECT DISTINCT {column} AS name FROM exposures WHERE experiment = {key} \
         AND {column} IS NOT NULL ORDER BY name",
        key = literal(key)
    )
}

/// The first `limit` experiment keys among the exposures.
pub(crate) fn exposure_experiments_sql(limit: usize) -> String {
    format!(
        "SELECT DISTINCT experiment AS name FROM exposures \
         WHERE experiment IS NOT NULL ORDER BY name LIMIT {limit}"
    )
}

/// Each unit's list of values of part `col` (a quantile metric's values
/// gathered in stage 2a), with its variant.
pub(crate) fn unit_value_lists_sql(col: usize) -> String {
    format!("SELECT variant, p{col} AS v FROM unit_values")
}

/// ` WHERE …` of the conditions, or nothing.
fn where_clause<'a>(conds: impl IntoIterator<Item = &'a str>) -> String {
    let conds: Vec<&str> = conds.into_iter().collect();
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// The `w` quantile (linear interpolation) of per-unit expression `ex` over
/// the units matching `filter`: a winsorizing cap.
pub(crate) fn winsorize_cap_sql(w: f64, ex: &str, filter: Option<&str>) -> String {
    format!(
        "SELECT percentile_cont({w:?}) WITHIN GROUP (ORDER BY v) AS cap \
         FROM (SELECT {ex} AS v FROM unit_values{})",
        where_clause(filter)
    )
}

/// `ex` capped at `cap` (unchanged when the cap is not finite: no cap).
pub(crate) fn capped(ex: &str, cap: f64) -> String {
    if cap.is_finite() {
        format!("CASE WHEN {ex} > {cap:?} THEN {cap:?} ELSE {ex} END")
    } else {
        ex.to_string()
    }
}

/// Stage 3: the centred moments of per-unit `y` and `x` (0 when there is no
/// `x`) per variant, and per value of `group` (a segment column) when
/// given, over the units matching `filter`.
pub(crate) fn moments_sql(
    y: &str,
    x: Option<&str>,
    filter: Option<&str>,
    group: Option<&str>,
) -> String {
    let group_sel = group.map(|g| format!(", {g}")).unwrap_or_default();
    format!(
        "SELECT variant{group_sel}, COUNT(*) AS n, AVG(y) AS my, VAR_POP(y) AS vy, AVG(x) AS mx, \
         VAR_POP(x) AS vx, COVAR_POP(x, y) AS cxy FROM (SELECT variant{group_sel}, {y} AS y, {x} AS x \
         FROM unit_values{where_}) GROUP BY variant{group_sel}",
        x = x.unwrap_or("0.0"),
        where_ = where_clause(filter),
    )
}

/// The novelty report's moments of the primary metric per variant, in the
/// early window of every unit, or (`late_only`) in the late window of the
/// units whose late window lies before the end.
pub(crate) fn novelty_window_sql(e: &UnitExpr, late_only: bool, b: &Bounds) -> String {
    let late = format!("first_ts + {} < {}", b.novelty, b.end);
    let conds = e
        .filter
        .as_deref()
        .into_iter()
        .chain(late_only.then_some(late.as_str()));
    format!(
        "SELECT variant, COUNT(*) AS n, AVG(y) AS my, VAR_POP(y) AS vy FROM \
         (SELECT variant, {} AS y FROM unit_values{}) GROUP BY variant",
        e.y,
        where_clause(conds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_to_sql_predicates() {
        let f: Filter = serde_json::from_str(
            r#"{"type": ["purchase", "refund"], "value": {"gt": 0, "lte": 1e6},
                "properties": {"country": {"in": ["US", "O'Hare"]}, "app": true}}"#,
        )
        .unwrap();
        let props = properties_of([&f]);
        assert_eq!(props, ["app", "country"]);
        assert_eq!(
            filter_sql(&f, &props),
            "(e.type IN ('purchase', 'refund')) AND (e.value > 0.0) AND (e.value <= 1000000.0) \
             AND (e.prop_0 = true) AND (e.prop_1 IN ('US', 'O''Hare'))"
        );
        assert_eq!(filter_sql(&Filter::default(), &[]), "true");
    }

    #[test]
    fn slices_cover_every_partition_value_once() {
        let (a, b, c) = (
            vec!["00".to_string(), "01".to_string()],
            vec!["02".to_string()],
            vec!["03".to_string()],
        );
        assert_eq!(
            slice_conditions(&[&a, &b, &c]),
            [
                "part IN ('00', '01')",
                "part IN ('02')",
                "(part IS NULL OR part NOT IN ('00', '01', '02'))"
            ]
        );
        assert_eq!(slice_conditions(&[&a]), ["true"]);
    }

    #[test]
    fn bot_limits_compile_to_a_case_per_type() {
        let d: BotDetection = serde_json::from_str(
            r#"{"per_minute": 300, "per_day": null, "event_types": {
                "impression": {"per_minute": 2000, "per_day": 100000},
                "heartbeat": {"per_minute": null}}}"#,
        )
        .unwrap();
        let b = Bounds {
            start: 5,
            end: 10,
            pre_start: None,
            skew: 0,
            novelty: 0,
            exposures_from: None,
        };
        let sql = bot_units_sql(&d, &b, "unit_keys", false);
        assert!(
            sql.contains(
                "JOIN unit_keys u ON e.unit_id = u.unit_id \
                          WHERE NOT e.is_bot AND e.ts >= 5 AND e.ts < 10)"
            ),
            "{sql}"
        );
        // One group per unit, type and day; minutes only for the
        // candidate cells.
        assert!(
            sql.contains(
                "d AS (SELECT e.uidx, e.type, e.ts / 86400000000000 AS b, COUNT(*) AS n \
                          FROM ev e GROUP BY e.uidx, e.type, e.ts / 86400000000000)"
            ),
            "{sql}"
        );
        let per_minute = "CASE type WHEN 'heartbeat' THEN CAST(NULL AS BIGINT) \
                          WHEN 'impression' THEN 2000 ELSE 300 END";
        assert!(
            sql.contains(&format!(
                "cand AS (SELECT uidx, type, b FROM d WHERE n > {per_minute})"
            )),
            "{sql}"
        );
        assert!(
            sql.contains("FROM cand c JOIN ev e ON e.uidx = c.uidx AND e.type = c.type \
                          AND e.ts / 86400000000000 = c.b GROUP BY e.uidx, e.type, e.ts / 60000000000)"),
            "{sql}"
        );
        assert!(sql.ends_with(&format!(
            "SELECT uidx FROM d WHERE n > CASE type WHEN 'heartbeat' THEN CAST(NULL AS BIGINT) \
             WHEN 'impression' THEN 100000 ELSE CAST(NULL AS BIGINT) END \
             UNION SELECT uidx FROM m WHERE n > {per_minute}"
        )));
        let exact = bot_units_sql(&d, &b, "bot_keys", true);
        assert!(exact.contains("JOIN bot_keys u"), "{exact}");
        assert!(exact.contains("GROUP BY e.uidx, e.type, e.ts / 60000000000, e.event_id)"));
        assert!(exact.contains("GROUP BY e.uidx, e.type, e.ts / 86400000000000, e.event_id)"));
        // Without default limits, only the limited types are scanned.
        let only: BotDetection = serde_json::from_str(
            r#"{"per_minute": null, "per_day": null,
                "event_types": {"page_view": {"per_day": 5000}, "x": {}}}"#,
        )
        .unwrap();
        let sql = bot_units_sql(&only, &b, "unit_keys", false);
        assert!(sql.contains("AND e.type IN ('page_view'))"), "{sql}");
        let plain = bot_units_sql(&BotDetection::default(), &b, "unit_keys", false);
        assert!(
            plain.ends_with(
                "SELECT uidx FROM d WHERE n > 20000 UNION SELECT uidx FROM m WHERE n > 300"
            ),
            "{plain}"
        );
    }

    #[test]
    fn units_take_the_first_exposure_per_unit() {
        let b = Bounds {
            start: 0,
            end: 10,
            pre_start: None,
            skew: 0,
            novelty: 0,
            exposures_from: None,
        };
        let itt = units_sql("exp", AnalysisMode::Itt, 1, &b);
        assert!(itt.contains("MIN(assigned_variant) AS variant"));
        assert!(itt.contains("MIN(assigned_variant) <> MAX(assigned_variant) AS multi_variant"));
        assert!(itt.contains("NOT ((MIN(assigned_variant) = MAX(assigned_variant) AND COUNT(assigned_variant) = COUNT(*) OR COUNT(assigned_variant) = 0) AND (MIN(seg_0) = MAX(seg_0)"));
        assert!(itt.contains("WHERE experiment = 'exp' AND ts < 10 GROUP BY unit_id"));
        let first = units_first_sql("exp", AnalysisMode::Itt, 1, &b);
        assert!(first.contains(
            "first_value(assigned_variant ORDER BY ts, assigned_variant) AS variant, \
             first_value(seg_0 ORDER BY ts, assigned_variant) AS seg_0"
        ));
        assert!(first.contains(
            "WHERE experiment = 'exp' AND ts < 10 \
             AND unit_id IN (SELECT unit_id FROM units_all WHERE ambiguous)"
        ));
        let pp = units_first_sql("exp", AnalysisMode::PerProtocol, 0, &b);
        assert!(pp.contains("first_value(variant ORDER BY ts, variant) AS variant"));
        // A period's analysis leaves out exposures before its start, in
        // both passes.
        let since = Bounds {
            exposures_from: Some(4),
            ..b
        };
        for sql in [
            units_sql("exp", AnalysisMode::Itt, 0, &since),
            units_first_sql("exp", AnalysisMode::Itt, 0, &since),
        ] {
            assert!(
                sql.contains("WHERE experiment = 'exp' AND ts >= 4 AND ts < 10"),
                "{sql}"
            );
        }
    }
}
