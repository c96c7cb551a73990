#!/usr/bin/env bash
# Analysis benchmark: generate a Parquet data set with the simulator
# (strata-sim's dataset: 3 variants, its behaviour model's 10 event types,
# heavy-tailed activity, written by the pipeline's writer), run the full analysis of bench/analysis/experiment.json
# (10 metrics incl. a ratio, a quantile and CUPED) and the equivalent per-unit
# aggregation in DuckDB on the same files, with and without event deduplication.
# DuckDB runs three times per mode: the same 16 per-unit parts and winsorizing
# cap as strata-analysis (`--parts plan`, the peer) with the p95 from a second
# scan of the events (`--quantile scan`) and from per-unit lists gathered by the
# per-unit aggregate (`--quantile folded`, as strata-analysis does), and the 9
# parts of earlier versions of bench/analysis/duckdb_compare.py (`--parts basic`).
#
# usage: bench/analysis/run.sh [UNITS] [VISITS_PER_UNIT] [DATA_DIR]
#   defaults: 1000000 units, 11 visits per unit of activity (≈ 100M events:
#   about 11 events per visit, and heavy-tailed activity capped at 200×
#   leaves ≈ 0.8 of the nominal mean)
#   MEMORY_LIMIT_MB (default 4096) caps both engines' memory; 0 for no limit.
# needs: python3 with duckdb (pip install duckdb)
set -euo pipefail
cd "$(dirname "$0")/../.."
UNITS="${1:-1000000}"
VPU="${2:-11}"
MEM="${MEMORY_LIMIT_MB:-4096}"
DATA="${3:-$HOME/.cache/strata/bench-analysis-sim-$UNITS-$VPU}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
cargo build --release -q -p strata-analysis --examples
cargo build --release -q -p strata-sim --example dataset
BIN="$CARGO_TARGET_DIR/release/examples"
if [ ! -d "$DATA/events" ]; then
    "$BIN/dataset" "$DATA" "$UNITS" "$VPU" 16
fi
du -sh "$DATA/exposures" "$DATA/events"
uptime
if [ "$MEM" != 0 ]; then export STRATA_MEMORY_LIMIT_MB="$MEM"; DUCK_MEM=(--memory-limit-mb "$MEM"); else DUCK_MEM=(); fi
for mode in "" "--assume-unique-event-ids"; do
    echo "== strata-analysis ${mode:-(dedup by event_id)}"
    python3 bench/analysis/timed.py --stdout /tmp/strata-analysis-bench.json "$BIN/analyze" \
        bench/analysis/experiment.json bench/analysis/metrics.json \
        "$DATA/exposures" "$DATA/events" json $mode
    for peer in "plan scan" "plan folded" "basic scan"; do
        read -r parts quantile <<< "$peer"
        echo "== duckdb --parts $parts --quantile $quantile ${mode:-(dedup by event_id)}"
        python3 - bench/analysis/duckdb_compare.py "$DATA" $mode --parts "$parts" --quantile "$quantile" "${DUCK_MEM[@]}" <<'PY'
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(f"duckdb peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
PY
    done
done
