#!/usr/bin/env bash
# Refresh benchmark of the scheduled analysis (docs/performance.md,
# "Scheduled refresh of 50 experiments"): 1 M units, ≈100 M events over 14
# days (plus the CUPED week before), 50 running experiments whose exposures
# overlap (exp_bench takes every unit, exp_o01 … exp_o49 each about 39 %,
# so a unit is in about 20), laid out by day as compaction writes them.
# The events of the last hour (≈300 k) are held back.
#
# For each mode (deduplicating by event_id, then unique ids), with a new
# rollup store:
#   1. full: the first refresh, every day computed, all 50 looks as of
#      23:00 on the last day;
#   2. the held-back hour is moved into the tree (its days' directories);
#   3. refresh: one more hour of data, looks as of the end; only the days
#      whose files or cut points changed are recomputed;
#   4. full again, as the daily full recomputation does: every day
#      recomputed and the kept ones compared (mismatched must be empty);
#   5. the peer: DuckDB analysing the same 50 experiments one query after
#      the other (bench/analysis/duckdb_compare.py --experiments), on the
#      same files, same memory limit; unit counts and conversion compared.
#
# usage: bench/analysis/refresh.sh [UNITS] [VISITS_PER_UNIT] [DATA_DIR]
#   MEMORY_LIMIT_MB (default 4096) caps both engines' memory; 0 for none.
#   EXPERIMENTS (default 50); MODES (default "dedup unique");
#   DUCKDB_EXPERIMENTS (default all): how many the peer analyses, exp_bench
#   first; with fewer than all, its time for all is estimated as
#   exp_bench's time + (N − 1) × the mean time of the others it ran, and
#   the output says so.
# needs: python3 with duckdb (pip install duckdb)
set -euo pipefail
cd "$(dirname "$0")/../.."
UNITS="${1:-1000000}"
VPU="${2:-11}"
N="${EXPERIMENTS:-50}"
MEM="${MEMORY_LIMIT_MB:-4096}"
DATA="${3:-$HOME/.cache/strata/bench-refresh-$UNITS-$VPU-$N}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
cargo build --release -q -p strata-analysis --example refresh
cargo build --release -q -p strata-sim --example dataset
BIN="$CARGO_TARGET_DIR/release/examples"
if [ ! -d "$DATA/kind=events" ]; then
    # (20 − 1) of the other N − 1 experiments per unit on average.
    SHARE=$(python3 -c "print(round(19 / ($N - 1), 4))")
    "$BIN/dataset" "$DATA" "$UNITS" "$VPU" 16 --overlapping "$((N - 1)):$SHARE" --by-date --hold-back-hours 1
fi
mkdir -p "$DATA/specs"
KEYS=(exp_bench)
for i in $(seq 1 $((N - 1))); do KEYS+=("$(printf 'exp_o%02d' "$i")"); done
SPECS=()
for k in "${KEYS[@]}"; do
    sed "s/\"exp_bench\"/\"$k\"/" bench/analysis/experiment.json > "$DATA/specs/$k.json"
    SPECS+=("$DATA/specs/$k.json")
done
# Held-back files: DATA/held-back/<path> ↔ DATA/<path>.
hold_back() {
    (cd "$DATA" && find kind=events -name hour.parquet) | while read -r f; do
        mkdir -p "$DATA/held-back/$(dirname "$f")"; mv "$DATA/$f" "$DATA/held-back/$f"
    done
}
release() {
    (cd "$DATA/held-back" && find kind=events -name hour.parquet) | while read -r f; do
        mkdir -p "$DATA/$(dirname "$f")"; mv "$DATA/held-back/$f" "$DATA/$f"
    done
}
hold_back
echo "held back: $(find "$DATA/held-back" -name hour.parquet | wc -l) files"
du -sh "$DATA/kind=exposures" "$DATA/kind=events" "$DATA/held-back"
uptime
if [ "$MEM" != 0 ]; then export STRATA_MEMORY_LIMIT_MB="$MEM"; DUCK_MEM=(--memory-limit-mb "$MEM"); else DUCK_MEM=(); fi
DUCK_N="${DUCKDB_EXPERIMENTS:-$N}"
DUCK_KEYS=$(IFS=,; echo "${KEYS[*]:0:$DUCK_N}")
for mode in ${MODES:-dedup unique}; do
    flag=(); [ "$mode" = unique ] && flag=(--assume-unique-event-ids)
    STORE="$DATA/store-$mode"
    rm -rf "$STORE"; hold_back
    run() {
        python3 bench/analysis/timed.py "$BIN/refresh" bench/analysis/metrics.json "$DATA/kind=exposures" "$DATA/kind=events" \
            "$STORE" "$1" "$DATA/results-$mode-$2.json" "${flag[@]}" "${@:3}" "${SPECS[@]}"
    }
    echo "== $mode: 1. full, first refresh, as of 23:00"
    run 2026-01-14T23:00:00Z first
    release
    echo "== $mode: 2. refresh after one more hour of data, as of the end"
    run 2026-01-15T00:00:00Z hour
    echo "== $mode: 3. full recomputation, kept days compared"
    run 2026-01-15T00:00:00Z full --full
    echo "== $mode: peer: duckdb, $DUCK_N of $N experiments"
    python3 - bench/analysis/duckdb_compare.py "$DATA" "${flag[@]}" --by-date --experiments "$DUCK_KEYS" \
        "${DUCK_MEM[@]}" <<'PY' | tee "/tmp/strata-refresh-duckdb-$mode.txt" | grep -v "^exp_"
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(f"duckdb peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
PY
    python3 - "$DATA/results-$mode-full.json" "$DATA/results-$mode-hour.json" "/tmp/strata-refresh-duckdb-$mode.txt" "$N" <<'PY'
import json, re, sys
full, hour = (json.load(open(p)) for p in sys.argv[1:3])
# The refresh and the full recomputation give the same numbers: counts
# exactly, the rest to 1e-9 relative (parallel sums add in any order).
def same(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300), (where, a, b)
    else:
        assert a == b, (where, a, b)
assert len(full) == len(hour) == int(sys.argv[4])
for a, b in zip(full, hour):
    same(a["units"], b["units"], a["experiment"])
    for m, n in zip(a["metrics"], b["metrics"]):
        same(m["variants"], n["variants"], f'{a["experiment"]}.{m["metric"]}')
ours = {d["experiment"]: d for d in full}
checked = 0
for line in open(sys.argv[3]):
    m = re.match(r"(exp_\w+) (\w+) (\d+) conversion ([\d.]+) purchases", line)
    if not m:
        continue
    key, variant, n, conv = m.group(1), m.group(2), int(m.group(3)), float(m.group(4))
    d = ours[key]
    conversion = next(x for x in d["metrics"] if x["metric"] == "conversion")["variants"][variant]
    assert d["units"][variant] == n, (key, variant, d["units"][variant], n)
    assert abs(conversion["mean"] - conv) < 1e-6, (key, variant, conversion["mean"], conv)
    checked += 1
print(f"the refresh equals the full recomputation for all {len(full)} experiments; "
      f"units and conversion equal DuckDB's for {checked} variants")
times = {}
for line in open(sys.argv[3]):
    m = re.match(r"(exp_\w+): per-unit values ([\d.]+) s, moments ([\d.]+) s, quantile ([\d.]+) s", line)
    if m:
        times[m.group(1)] = sum(float(m.group(i)) for i in (2, 3, 4))
n = int(sys.argv[4])
if len(times) < n:
    others = [t for k, t in times.items() if k != "exp_bench"]
    estimate = times["exp_bench"] + (n - 1) * sum(others) / len(others)
    print(f"duckdb ran {len(times)} of {n} experiments: exp_bench {times['exp_bench']:.2f} s, "
          f"the others {min(others):.2f}–{max(others):.2f} s; estimated for all {n}: {estimate:.2f} s")
PY
done
