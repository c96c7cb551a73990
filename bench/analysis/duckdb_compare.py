"""DuckDB peer for the analysis benchmark.

Runs, on the same Parquet files, the per-unit aggregation that
`strata-analysis` compiles for bench/analysis/experiment.json and
bench/analysis/metrics.json, then the per-variant statistics it reads:

- units: first exposure per unit, its variant and window start;
- events in each unit's window, deduplicated by event_id unless
  --assume-unique-event-ids;
- one column per metric part, zero-filled per unit: with `--parts plan`
  (default) the 16 parts strata computes (seven in the analysis window, the
  same seven in the CUPED pre-period, and the primary's novelty early / late
  split), with `--parts basic` the 9 of earlier versions of this script
  (analysis window, and the pre-period of purchases and revenue only);
- per-variant moments and covariances of every part, the winsorizing cap of
  revenue (99.9th percentile of per-unit revenue) and, with `--parts plan`,
  the p95 of page_load values per variant (deduplicated likewise): with
  `--quantile scan` (default) from a second pass over the events, with
  `--quantile folded` from a per-unit list of values collected by the same
  aggregate as the parts (as strata-analysis does).

usage: python3 duckdb_compare.py DATA_DIR [--assume-unique-event-ids] [--parts plan|basic]
           [--quantile scan|folded] [--threads N] [--memory-limit-mb M]
           [--experiments KEY,KEY,...] [--by-date]
(--experiments analyses each experiment in turn, one query after the other as a
warehouse-native tool does, all with the metrics of bench/analysis/experiment.json;
default exp_bench. --by-date reads the layout of compaction,
kind=<kind>/date=YYYY-MM-DD/part=NN/*.parquet.)
(--memory-limit-mb caps DuckDB's memory like strata-analysis's limit; beyond it
DuckDB spills to a temporary directory.)
"""
import sys
import time

import duckdb


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


data = sys.argv[1]
dedup = "--assume-unique-event-ids" not in sys.argv
threads = int(arg("--threads", 2))
memory_mb = int(arg("--memory-limit-mb", 0)) or None
full = arg("--parts", "plan") == "plan"
folded = full and arg("--quantile", "scan") == "folded"
experiments = arg("--experiments", "exp_bench").split(",")
if "--by-date" in sys.argv:
    exposures_glob = f"{data}/kind=exposures/*/*/*.parquet"
    events_glob = f"{data}/kind=events/*/*/*.parquet"
else:
    exposures_glob = f"{data}/exposures/*/*.parquet"
    events_glob = f"{data}/events/*/*.parquet"

START = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"
END = "TIMESTAMPTZ '2026-01-15 00:00:00+00'"
PRE = "TIMESTAMPTZ '2025-12-25 00:00:00+00'"
NOVELTY = "INTERVAL 7 DAY"

windows = {
    "": "e.ts >= u.lo",
    "_pre": f"e.ts < {START}",
    "_early": "e.ts >= u.lo AND e.ts < u.novelty_end",
    "_late": "e.ts >= u.lo AND e.ts >= u.novelty_end",
}
# (name, event type, count or sum) of the analysis-window parts.
counted = [("purchases", "purchase", "c"), ("revenue", "purchase", "s"), ("page_views", "page_view", "c"),
           ("clicks", "click", "c"), ("searches", "search", "c"), ("shares", "share", "c"),
           ("errors", "error", "c")]
if full:
    plan = [(n, t, a, w) for w in ("", "_pre") for n, t, a in counted]
    plan += [("purchases", "purchase", "c", "_early"), ("purchases", "purchase", "c", "_late")]
else:
    plan = [(n, t, a, "") for n, t, a in counted] + [(n, t, a, "_pre") for n, t, a in counted[:2]]
parts = {
    f"{n}{w}": f"CASE WHEN {windows[w]} AND e.type = '{t}' THEN {'1' if a == 'c' else 'coalesce(e.value, 0)'} ELSE 0 END"
    for n, t, a, w in plan
}
types = "'purchase', 'page_view', 'click', 'search', 'share', 'error'" + (", 'page_load'" if folded else "")
contrib = ", ".join(f"{v} AS {k}" for k, v in parts.items())
sums = ", ".join(f"sum({k}) AS {k}" for k in parts)
pl_list, pl_out = "", ""
if folded:
    contrib += ", CASE WHEN e.type = 'page_load' AND e.ts >= u.lo THEN e.value END AS pl"
    pl_list, pl_out = ", list(pl) FILTER (WHERE pl IS NOT NULL) AS pl", ", a.pl"
if dedup:
    per_unit = (
        f"d AS (SELECT unit_id, event_id, {', '.join(f'max({k}) AS {k}' for k in parts)}{', max(pl) AS pl' if folded else ''} "
        f"FROM j GROUP BY unit_id, event_id), "
        f"a AS (SELECT unit_id, {sums}{pl_list} FROM d GROUP BY unit_id)"
    )
else:
    per_unit = f"a AS (SELECT unit_id, {sums}{pl_list} FROM j GROUP BY unit_id)"
units = f"""units AS (
  SELECT unit_id, arg_min(variant, ts) AS variant,
         greatest(min(ts) - INTERVAL 5 SECOND, {START}) AS lo, min(ts) + {NOVELTY} AS novelty_end
  FROM read_parquet('{exposures_glob}', hive_partitioning = false)
  WHERE experiment = '{{key}}' AND ts < {END} GROUP BY unit_id)"""
events = f"read_parquet('{events_glob}', hive_partitioning = false)"
# Per-unit values are materialized once, as strata-analysis does, then read
# by the moments and the winsorizing cap.
unit_values_sql = f"""
CREATE TEMP TABLE uv AS
WITH {units},
ev AS (SELECT event_id, unit_id, type, ts, value FROM {events}
       WHERE NOT is_bot AND ts >= {PRE} AND ts < {END} AND type IN ({types})),
j AS (SELECT e.unit_id, e.event_id, {contrib} FROM ev e JOIN units u ON e.unit_id = u.unit_id),
{per_unit}
SELECT u.variant, {', '.join(f'coalesce(a.{k}, 0) AS {k}' for k in parts)}{pl_out}
FROM units u LEFT JOIN a ON u.unit_id = a.unit_id
"""
covariates = [k for k in parts if k.endswith("_pre")]
sql = f"""
WITH cap AS (SELECT quantile_cont(revenue, 0.999) AS c FROM uv)
SELECT variant, count(*) AS n,
  {', '.join(f'avg({k}) AS m_{k}, var_pop({k}) AS v_{k}' for k in parts)},
  {', '.join(f'covar_pop({k[:-4]}, {k}) AS c_{k}' for k in covariates)},
  covar_pop(revenue, purchases) AS c_aov,
  avg(least(revenue, cap.c)) AS m_revenue_winsorized,
  var_pop(least(revenue, cap.c)) AS v_revenue_winsorized,
  avg(CASE WHEN purchases > 0 THEN 1 ELSE 0 END) AS conversion
FROM uv, cap GROUP BY variant ORDER BY variant
"""
# The quantile guardrail: page_load values in each unit's window.
if dedup:
    pl = "SELECT any_value(u.variant) AS variant, max(e.value) AS value"
    pl_group = "GROUP BY e.unit_id, e.event_id"
else:
    pl, pl_group = "SELECT u.variant, e.value", ""
quantile_sql = f"""
WITH {units}
SELECT variant, count(*), quantile_cont(value, 0.95) FROM (
  {pl} FROM {events} e JOIN units u ON e.unit_id = u.unit_id
  WHERE NOT e.is_bot AND e.type = 'page_load' AND e.value IS NOT NULL AND e.ts >= u.lo AND e.ts < {END}
  {pl_group}) GROUP BY variant ORDER BY variant
"""
if folded:
    quantile_sql = """
SELECT variant, count(*), quantile_cont(v, 0.95) FROM (SELECT variant, unnest(pl) AS v FROM uv)
GROUP BY variant ORDER BY variant
"""
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
if memory_mb:
    con.execute(f"SET memory_limit = '{memory_mb}MB'")
t_all = time.perf_counter()
for key in experiments:
    def keyed(q):
        return q.replace("{key}", key)
    con.execute("DROP TABLE IF EXISTS uv")
    t = time.perf_counter()
    con.execute(keyed(unit_values_sql))
    t_units = time.perf_counter()
    rows = con.execute(keyed(sql)).fetchall()
    t_moments = time.perf_counter()
    quantiles = con.execute(keyed(quantile_sql)).fetchall() if full else []
    elapsed = time.perf_counter() - t
    print(f"{key}: per-unit values {t_units - t:.2f} s, moments {t_moments - t_units:.2f} s, quantile {t + elapsed - t_moments:.2f} s")
    for r in rows:
        print(key, r[0], r[1], "conversion", round(r[-1], 6), "purchases", round(r[2], 6))
    for r in quantiles:
        print(key, r[0], "page_load values", r[1], "p95", round(r[2], 6))
elapsed = time.perf_counter() - t_all
print(
    f"duckdb {duckdb.__version__}: {elapsed:.2f} s for {len(experiments)} experiment(s) "
    f"(dedup={dedup}, parts={len(parts)}, quantile={'folded' if folded else 'scan'}, "
    f"threads={threads}, "
    f"memory_limit_mb={memory_mb})"
)
