"""Times alternative SQL shapes of the analysis plan on DataFusion (the
`datafusion` Python package, same engine version as the crate), to show
where the time and memory of `strata analyze` go. Each variant computes the
same thing; only the SQL differs.

usage: python3 plan_variants.py DATA_DIR [VARIANT ...]
   DATA_DIR as written by crates/strata-sim/examples/dataset.rs
   (exposures/ and events/ Parquet, experiment exp_bench).
needs: pip install datafusion==55.0.0

Run it under a memory cap (`ulimit -v 8000000`): `units_count_distinct` is the
variant that used to take gigabytes.
"""
import sys
import time

from datafusion import SessionConfig, SessionContext

data = sys.argv[1]
ctx = SessionContext(SessionConfig().with_target_partitions(2))
ctx.register_parquet("exposures_raw", f"{data}/exposures/")
ctx.register_parquet("events_raw", f"{data}/events/")
ctx.sql(
    "CREATE VIEW exposures AS SELECT CAST(unit_id AS VARCHAR) AS unit_id, CAST(experiment AS VARCHAR) AS experiment, "
    "CAST(variant AS VARCHAR) AS v, false AS opted_out, CAST(ts AS BIGINT) * 1000 AS ts FROM exposures_raw"
).collect()
ctx.sql(
    "CREATE VIEW events AS SELECT CAST(event_id AS VARCHAR) AS event_id, CAST(unit_id AS VARCHAR) AS unit_id, "
    "CAST(type AS VARCHAR) AS type, CAST(ts AS BIGINT) * 1000 AS ts, value, COALESCE(is_bot, false) AS is_bot FROM events_raw"
).collect()
START, DAY = 1767225600 * 10**9, 86400 * 10**9
END, PRE = START + 14 * DAY, START - 7 * DAY

units = ctx.sql(
    f"SELECT unit_id, CAST(ROW_NUMBER() OVER () AS BIGINT) AS uidx, MIN(ts) AS first_ts, "
    f"GREATEST(MIN(ts) - 5000000000, {START}) AS lo FROM exposures GROUP BY unit_id"
).collect()
ctx.register_record_batches("units", [units])

# The parts of bench/analysis/metrics.json: (window, event type, count|sum).
win = {
    "a": "e.ts >= {u}.lo",
    "p": f"e.ts < {START}",
    "e": f"e.ts >= {{u}}.lo AND e.ts < {{u}}.first_ts + {7 * DAY}",
    "l": f"e.ts >= {{u}}.lo AND e.ts >= {{u}}.first_ts + {7 * DAY}",
}
parts = [
    (w, t, a)
    for w in "ap"
    for t, a in [("purchase", "c"), ("purchase", "s"), ("page_view", "c"), ("click", "c"),
                 ("search", "c"), ("share", "c"), ("error", "c")]
] + [("e", "purchase", "c"), ("l", "purchase", "c")]
types = "'purchase', 'page_view', 'click', 'search', 'share', 'error'"
ev = f"ev AS (SELECT * FROM events WHERE NOT is_bot AND ts >= {PRE} AND ts < {END} AND type IN ({types}))"
total = ", ".join(f"SUM(p{i})" for i in range(len(parts)))


def case(u):
    return ", ".join(
        f"CASE WHEN {win[w].format(u=u)} AND e.type = '{t}' THEN {'1' if a == 'c' else 'COALESCE(e.value, 0.0)'} ELSE 0 END AS p{i}"
        for i, (w, t, a) in enumerate(parts)
    )


def filtered(u):
    return ", ".join(
        f"{'COUNT(*)' if a == 'c' else 'SUM(e.value)'} FILTER (WHERE {win[w].format(u=u)} AND e.type = '{t}') AS p{i}"
        for i, (w, t, a) in enumerate(parts)
    )


maxes = ", ".join(f"MAX(p{i}) AS p{i}" for i in range(len(parts)))
sums = ", ".join(f"SUM(p{i}) AS p{i}" for i in range(len(parts)))
join = "FROM ev e JOIN units u ON e.unit_id = u.unit_id"
variants = {
    # Stage 1: the units aggregate.
    # (Every output column is used, or the optimizer drops the aggregate.)
    "units_count_distinct": "SELECT MAX(a), MAX(b), SUM(CASE WHEN c > 1 THEN 1 ELSE 0 END), SUM(CASE WHEN d THEN 1 ELSE 0 END) "
    "FROM (SELECT unit_id, first_value(v ORDER BY ts, v) AS a, MIN(ts) AS b, "
    "COUNT(DISTINCT v) AS c, bool_or(opted_out) AS d FROM exposures GROUP BY unit_id)",
    "units_min_max": "SELECT MAX(a), MAX(b), SUM(CASE WHEN c THEN 1 ELSE 0 END), SUM(CASE WHEN d THEN 1 ELSE 0 END) "
    "FROM (SELECT unit_id, first_value(v ORDER BY ts, v) AS a, MIN(ts) AS b, "
    "MIN(v) <> MAX(v) AS c, bool_or(opted_out) AS d FROM exposures GROUP BY unit_id)",
    # Stage 2 with unique event ids: CASE columns summed per string unit_id,
    # or FILTER aggregates per dense integer key.
    "unique_case_sum": f"WITH {ev}, j AS (SELECT e.unit_id, {case('u')} {join}) "
    f"SELECT COUNT(*), {total} FROM (SELECT unit_id, {sums} FROM j GROUP BY unit_id)",
    "unique_filter": f"WITH {ev} SELECT COUNT(*), {total} FROM (SELECT u.uidx, {filtered('u')} {join} GROUP BY u.uidx)",
    # Stage 2 deduplicating by event_id: one MAX per part per (unit, event),
    # or a narrow (unit, event) aggregate then FILTER aggregates.
    "dedup_max_per_part": f"WITH {ev}, j AS (SELECT e.unit_id, e.event_id, {case('u')} {join}), "
    f"d AS (SELECT unit_id, event_id, {maxes} FROM j GROUP BY unit_id, event_id) "
    f"SELECT COUNT(*), {total} FROM (SELECT unit_id, {sums} FROM d GROUP BY unit_id)",
    "dedup_narrow_filter": f"WITH {ev}, d AS (SELECT u.uidx, e.event_id, MIN(e.ts) AS ts, MAX(e.value) AS value, "
    f"MAX(e.type) AS type, MIN(u.lo) AS lo, MIN(u.first_ts) AS first_ts {join} GROUP BY u.uidx, e.event_id) "
    f"SELECT COUNT(*), {total} FROM (SELECT e.uidx, {filtered('e')} FROM d e GROUP BY e.uidx)",
    # The same with the unit's columns (functions of uidx) in the group key
    # instead of MIN accumulators; and with `type` there too (a duplicate
    # whose type differs would then count once per type).
    "dedup_unit_cols_in_key": f"WITH {ev}, d AS (SELECT u.uidx, e.event_id, u.lo, u.first_ts, MIN(e.ts) AS ts, "
    f"MAX(e.value) AS value, MAX(e.type) AS type {join} GROUP BY u.uidx, e.event_id, u.lo, u.first_ts) "
    f"SELECT COUNT(*), {total} FROM (SELECT e.uidx, {filtered('e')} FROM d e GROUP BY e.uidx)",
    "dedup_type_in_key": f"WITH {ev}, d AS (SELECT u.uidx, e.event_id, e.type, u.lo, u.first_ts, MIN(e.ts) AS ts, "
    f"MAX(e.value) AS value {join} GROUP BY u.uidx, e.event_id, e.type, u.lo, u.first_ts) "
    f"SELECT COUNT(*), {total} FROM (SELECT e.uidx, {filtered('e')} FROM d e GROUP BY e.uidx)",
}
for name in sys.argv[2:] or variants:
    t = time.perf_counter()
    ctx.sql(variants[name]).collect()
    print(f"{name}: {time.perf_counter() - t:.2f} s", flush=True)
