#!/usr/bin/env bash
# Guardrail monitor end to end, against its target: 300 running experiments ×
# 3 organisation-wide guardrails while ingestion runs at 300,000 records/s —
# one monitor cycle ≤ 30 s, data seen by the monitor ≤ 60 s after its
# acknowledgement, and from the breach decision to the kill reaching 10,000
# SSE stream subscribers p99 ≤ 250 ms.
#
#   bench/guardrails/run.sh [ARGS]
#
# ARGS go to the generator (bench/guardrails/src/main.rs, a crate of its own),
# e.g. `--rate 150000 --seconds 240`; its defaults are the target's figures
# (--experiments 300 --guardrails 3 --rate 300000 --seconds 180
# --subscribers 10000 --interval 30s --exposures-per-unit 3). The server runs
# as a child process of the generator (its CPU is measured on its own) with
# --no-analysis; one experiment, bench_bad, has a 5× error rate in its
# treatment and must be killed; the others are A/A. The summary on stdout is
# Markdown tables; progress goes to stderr.
#
# The collector limits each source address to 10,000 records/s and each
# ingestion key to 100,000 records/s, with no flag of `strata serve` to change
# either: the generator binds each connection to its own 127.0.1.x address and
# spreads the connections over several ingestion keys (--single-source and
# --ingest-keys change that).
#
# The server runs with MIMALLOC_PURGE_DELAY=-1 (the setting docs/operations.md
# recommends for ingestion servers) unless the variable is set. 10,000
# subscribers need about 10,300 open files in the generator and as many in the
# server: the soft limit is raised to the hard one when it is lower.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY:--1}"
cargo build --release -p strata-cli --bin strata
cargo build --release --manifest-path bench/guardrails/Cargo.toml
target="${CARGO_TARGET_DIR:-target}"
bench_target="${CARGO_TARGET_DIR:-bench/guardrails/target}"
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$(ulimit -n)" -lt "$hard" ]; then
  ulimit -n "$hard" 2>/dev/null || true
fi
echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
"$bench_target/release/guardrail_bench" --strata "$target/release/strata" "$@"
