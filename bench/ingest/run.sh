#!/usr/bin/env bash
# Ingestion load test: the simulator's visits (strata-sim's behaviour model),
# 500-byte events in batches of 500 from 64 concurrent connections on loopback, against the embedded log (local mode) and against
# NATS JetStream (scale-out mode) in the same session. The server runs as a
# child process of the load generator so its CPU is measured on its own.
#
#   bench/ingest/run.sh [SECONDS]        (default 60)
#
# Extra arguments of the generator go in INGEST_ARGS, e.g. INGEST_ARGS="--rate
# 150000" paces the load at 150,000 events/s (open loop, latency from each
# batch's intended send time) instead of sending as fast as acks return.
#
# The server runs with MIMALLOC_PURGE_DELAY=-1 (the setting docs/operations.md
# recommends for ingestion servers) unless the variable is set; set it to 10 to
# measure mimalloc's default.
#
# JetStream mode needs nats-server with JetStream at $STRATA_TEST_NATS_URL
# (default nats://127.0.0.1:4222) and is skipped if it does not answer.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
export STRATA_TEST_NATS_URL="${STRATA_TEST_NATS_URL:-nats://127.0.0.1:4222}"
cargo build --release -p strata-sim --example ingest_load
bin="${CARGO_TARGET_DIR:-target}/release/examples/ingest_load"
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" run --mode local --seconds "$seconds" --data "$data/local" ${INGEST_ARGS:-}
host_port="${STRATA_TEST_NATS_URL#nats://}"
if (exec 3<>"/dev/tcp/${host_port%:*}/${host_port#*:}") 2>/dev/null; then
  "$bin" run --mode nats --seconds "$seconds" --data "$data/nats" --nats-url "$STRATA_TEST_NATS_URL" ${INGEST_ARGS:-}
else
  echo "== SKIP jetstream mode: no nats-server at $STRATA_TEST_NATS_URL"
fi
