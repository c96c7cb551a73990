#!/usr/bin/env bash
# Time to first insight: the README's first command from a cold build to every
# demo scenario showing its outcome.
#
#   bench/demo/run.sh [SPEED]        (default: the demo's default, 8640)
#
# Builds the release binary in a fresh target directory (a cold build; set
# CARGO_TARGET_DIR to reuse one and time an incremental build instead),
# reports the build time and the binary's size, then runs
# `strata demo --until-outcomes` and reports when each scenario showed its
# outcome and when all had.
set -euo pipefail
cd "$(dirname "$0")/../.."
speed="${1:-8640}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(mktemp -d)/target}"
echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), target $CARGO_TARGET_DIR"
start=$(date +%s)
cargo build --release -p strata-cli
end=$(date +%s)
bin="$CARGO_TARGET_DIR/release/strata"
echo "== build: $((end - start)) s; binary: $(stat -c %s "$bin") bytes"
port=$((20000 + RANDOM % 20000))
start=$(date +%s%N)
"$bin" demo --listen "127.0.0.1:$port" --speed "$speed" --until-outcomes
end=$(date +%s%N)
echo "== demo: every scenario's outcome $(((end - start) / 1000000)) ms after the command started"
