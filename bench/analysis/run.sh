#!/usr/bin/env bash
# Analysis benchmark: generate a Parquet data set (3 variants, 10 event types,
# heavy-tailed activity), run the full analysis of bench/analysis/experiment.json
# (10 metrics incl. a ratio, a quantile and CUPED) and the equivalent per-unit
# aggregation in DuckDB on the same files, with and without event deduplication.
#
# usage: bench/analysis/run.sh [UNITS] [EVENTS_PER_UNIT] [DATA_DIR]
#   defaults: 1000000 units, 100 events per unit (≈ 100M events)
# needs: python3 with duckdb (pip install duckdb)
set -euo pipefail
cd "$(dirname "$0")/../.."
UNITS="${1:-1000000}"
EPU="${2:-100}"
DATA="${3:-$HOME/.cache/strata/bench-analysis-$UNITS-$EPU}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
cargo build --release -q -p strata-analysis --examples
BIN="$CARGO_TARGET_DIR/release/examples"
if [ ! -d "$DATA/events" ]; then
    "$BIN/generate" "$DATA" "$UNITS" "$EPU" 16
fi
du -sh "$DATA/exposures" "$DATA/events"
peak_rss() { python3 -c 'import resource,sys; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, "MiB peak RSS")'; }
for mode in "" "--assume-unique-event-ids"; do
    echo "== strata-analysis ${mode:-(dedup by event_id)}"
    python3 - "$BIN/analyze" bench/analysis/experiment.json bench/analysis/metrics.json \
        "$DATA/exposures" "$DATA/events" json $mode <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
if out.returncode != 0:
    sys.exit(out.stderr)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
open("/tmp/strata-analysis-bench.json", "w").write(out.stdout)
print(out.stderr.strip())
print(f"end to end {wall:.2f} s, peak RSS {rss:.0f} MiB")
PY
    echo "== duckdb ${mode:-(dedup by event_id)}"
    python3 bench/analysis/duckdb_compare.py "$DATA" $mode
done
