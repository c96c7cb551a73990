#!/usr/bin/env bash
# Distributed analysis benchmark: the analysis of bench/analysis/experiment.json
# on the simulator's data set (the one bench/analysis/run.sh writes), run by
# the single-process engine and on an Apache Ballista cluster on this machine
# with one and with two executors (`strata ballista-scheduler`,
# `strata ballista-executor`, separate processes on loopback).
#
# On a cluster the per-unit parts are computed by their portable SQL form
# (one FILTER aggregate per part), so the single-process engine runs both with
# its fused aggregate (its default) and with `--unfused-parts`, the same plan.
#
# usage: bench/analysis/ballista.sh [UNITS] [VISITS_PER_UNIT] [DATA_DIR]
#   defaults as bench/analysis/run.sh: 1000000 units, 11 visits (≈ 100M events)
#   MEMORY_LIMIT_MB (default 4096): the single-process engine's limit, and
#     each executor's share of it (the limit divided by the executors).
#   TASKS (default: the machine's cores): concurrent tasks per executor.
#   PARTITIONS (default 2 × cores): partitions of every query on the cluster.
#   MODES (default "dedup unique"): with and without deduplication by event_id.
#   STRATA: a `strata` binary built with --features ballista to use instead of
#     building the release one (a smoke run with a debug build, say).
set -euo pipefail
cd "$(dirname "$0")/../.."
UNITS="${1:-1000000}"
VPU="${2:-11}"
MEM="${MEMORY_LIMIT_MB:-4096}"
CORES="$(nproc)"
TASKS="${TASKS:-$CORES}"
PARTITIONS="${PARTITIONS:-$((2 * CORES))}"
MODES="${MODES:-dedup unique}"
DATA="${3:-$HOME/.cache/strata/bench-analysis-sim-$UNITS-$VPU}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
if [ -z "${STRATA:-}" ]; then
    cargo build --release -q -p strata-cli --features ballista
    STRATA="$CARGO_TARGET_DIR/release/strata"
fi
if [ ! -d "$DATA/events" ]; then
    cargo build --release -q -p strata-sim --example dataset
    "$CARGO_TARGET_DIR/release/examples/dataset" "$DATA" "$UNITS" "$VPU" 16
fi
du -sh "$DATA/exposures" "$DATA/events"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

# Times one `strata analyze`, prints wall time and the client's peak RSS, and
# keeps its output for the comparison at the end.
run() {
    local name="$1"; shift
    python3 - "$name" "$STRATA" analyze --spec bench/analysis/experiment.json \
        --metrics bench/analysis/metrics.json --exposures "$DATA/exposures" \
        --events "$DATA/events" "$@" <<'PY'
import resource, subprocess, sys, time
name = sys.argv[1]
t = time.perf_counter()
out = subprocess.run(sys.argv[2:], capture_output=True, text=True)
wall = time.perf_counter() - t
if out.returncode != 0:
    sys.exit(out.stderr)
open(f"/tmp/strata-ballista-bench-{name}.json", "w").write(out.stdout)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{name}: {wall:.2f} s (client peak RSS {rss:.0f} MiB)", flush=True)
PY
}

# Starts a scheduler and $1 executors; their pids go to PIDS.
start_cluster() {
    local n="$1" port=50150
    "$STRATA" ballista-scheduler --listen "127.0.0.1:$port" --external-host 127.0.0.1 \
        > "$WORK/scheduler.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    for i in $(seq 1 "$n"); do
        local flight=$((port + 2 * i)) grpc=$((port + 2 * i + 1))
        "$STRATA" ballista-executor --scheduler "127.0.0.1:$port" \
            --listen "127.0.0.1:$flight" --grpc-port "$grpc" \
            --concurrent-tasks "$TASKS" --work-dir "$WORK/executor-$n-$i" \
            --memory-limit-mb "$((MEM / n))" > "$WORK/executor-$n-$i.log" 2>&1 &
        PIDS+=($!)
        wait_port "$flight"
    done
    sleep 2
}

stop_cluster() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

uptime
for mode in $MODES; do
    flags=()
    if [ "$mode" = unique ]; then flags=(--assume-unique-event-ids); fi
    echo "== ${mode}: single process (memory limit $MEM MiB)"
    run "single-fused-$mode" "${flags[@]}" --memory-limit-mb "$MEM"
    run "single-unfused-$mode" "${flags[@]}" --memory-limit-mb "$MEM" --unfused-parts
    for n in 1 2; do
        echo "== ${mode}: Ballista, $n executor(s) × $TASKS tasks, $PARTITIONS partitions"
        start_cluster "$n"
        mkdir -p "$WORK/scratch"
        run "ballista-$n-$mode" "${flags[@]}" --ballista df://127.0.0.1:50150 \
            --ballista-scratch "$WORK/scratch" --target-partitions "$PARTITIONS"
        stop_cluster
    done
    python3 - "$mode" <<'PY'
import json, sys
mode = sys.argv[1]
runs = ("single-fused", "single-unfused", "ballista-1", "ballista-2")
docs = {n: json.load(open(f"/tmp/strata-ballista-bench-{n}-{mode}.json")) for n in runs}
def same(a, b, path):
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-9 * (1 + abs(a)), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)
for n in runs[1:]:
    same(docs[runs[0]], docs[n], n)
print(f"every run gives the same results document; units {docs[runs[0]]['units']}")
PY
done
uptime
