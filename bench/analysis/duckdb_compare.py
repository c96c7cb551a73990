"""DuckDB peer for the analysis benchmark.

Runs the per-unit aggregation that `strata-analysis` compiles for
bench/analysis/experiment.json (first exposure per unit, events in each unit's
window, deduplication by event_id unless --assume-unique-event-ids, one column
per metric part incl. the CUPED pre-period covariate, zero-filled per unit,
then per-variant moments) on the same Parquet files, and prints the time.

usage: python3 duckdb_compare.py DATA_DIR [--assume-unique-event-ids] [--threads N] [--memory-limit-mb M]
(--memory-limit-mb caps DuckDB's memory like strata-analysis's limit; beyond it
DuckDB spills to a temporary directory.)
"""
import sys
import time

import duckdb

data = sys.argv[1]
dedup = "--assume-unique-event-ids" not in sys.argv
threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
memory_mb = (
    int(sys.argv[sys.argv.index("--memory-limit-mb") + 1]) if "--memory-limit-mb" in sys.argv else None
)

START = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"
END = "TIMESTAMPTZ '2026-01-15 00:00:00+00'"
PRE = "TIMESTAMPTZ '2025-12-25 00:00:00+00'"

parts = {
    # analysis-window parts
    "purchases": "CASE WHEN e.ts >= u.lo AND e.type = 'purchase' THEN 1 ELSE 0 END",
    "revenue": "CASE WHEN e.ts >= u.lo AND e.type = 'purchase' THEN coalesce(e.value, 0) ELSE 0 END",
    "page_views": "CASE WHEN e.ts >= u.lo AND e.type = 'page_view' THEN 1 ELSE 0 END",
    "clicks": "CASE WHEN e.ts >= u.lo AND e.type = 'click' THEN 1 ELSE 0 END",
    "searches": "CASE WHEN e.ts >= u.lo AND e.type = 'search' THEN 1 ELSE 0 END",
    "shares": "CASE WHEN e.ts >= u.lo AND e.type = 'share' THEN 1 ELSE 0 END",
    "errors": "CASE WHEN e.ts >= u.lo AND e.type = 'error' THEN 1 ELSE 0 END",
    # CUPED pre-period covariates
    "purchases_pre": f"CASE WHEN e.ts < {START} AND e.type = 'purchase' THEN 1 ELSE 0 END",
    "revenue_pre": f"CASE WHEN e.ts < {START} AND e.type = 'purchase' THEN coalesce(e.value, 0) ELSE 0 END",
}
types = "'purchase', 'page_view', 'click', 'search', 'share', 'error'"
contrib = ", ".join(f"{v} AS {k}" for k, v in parts.items())
if dedup:
    per_unit = (
        f"d AS (SELECT unit_id, event_id, {', '.join(f'max({k}) AS {k}' for k in parts)} FROM j GROUP BY unit_id, event_id), "
        f"a AS (SELECT unit_id, {', '.join(f'sum({k}) AS {k}' for k in parts)} FROM d GROUP BY unit_id)"
    )
else:
    per_unit = f"a AS (SELECT unit_id, {', '.join(f'sum({k}) AS {k}' for k in parts)} FROM j GROUP BY unit_id)"
sql = f"""
WITH units AS (
  SELECT unit_id, arg_min(variant, ts) AS variant, min(ts) AS first_ts,
         greatest(min(ts) - INTERVAL 5 SECOND, {START}) AS lo
  FROM read_parquet('{data}/exposures/*/*.parquet', hive_partitioning = false)
  WHERE experiment = 'exp_bench' AND ts < {END} GROUP BY unit_id),
ev AS (SELECT event_id, unit_id, type, ts, value FROM read_parquet('{data}/events/*/*.parquet', hive_partitioning = false)
       WHERE NOT is_bot AND ts >= {PRE} AND ts < {END} AND type IN ({types})),
j AS (SELECT e.unit_id, e.event_id, {contrib} FROM ev e JOIN units u ON e.unit_id = u.unit_id),
{per_unit},
uv AS (SELECT u.variant, {', '.join(f'coalesce(a.{k}, 0) AS {k}' for k in parts)}
       FROM units u LEFT JOIN a ON u.unit_id = a.unit_id)
SELECT variant, count(*) AS n,
  {', '.join(f'avg({k}) AS m_{k}, var_pop({k}) AS v_{k}' for k in parts)},
  covar_pop(purchases, purchases_pre) AS c_purchases, covar_pop(revenue, revenue_pre) AS c_revenue,
  avg(CASE WHEN purchases > 0 THEN 1 ELSE 0 END) AS conversion
FROM uv GROUP BY variant ORDER BY variant
"""
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
if memory_mb:
    con.execute(f"SET memory_limit = '{memory_mb}MB'")
t = time.perf_counter()
rows = con.execute(sql).fetchall()
elapsed = time.perf_counter() - t
for r in rows:
    print(r[0], r[1], "conversion", round(r[-1], 6), "purchases", round(r[2], 6))
print(f"duckdb {duckdb.__version__}: {elapsed:.2f} s (dedup={dedup}, threads={threads}, memory_limit_mb={memory_mb})")
