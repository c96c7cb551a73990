#!/usr/bin/env bash
# End-to-end throughput of `strata assign` over 1,000,000 units, as unit ids
# (--units) and as NDJSON contexts (--contexts), against the example snapshot.
# Peer in the same run: the Python reference implementation of the spec
# (testdata/assignment/reference.py, murmur3 from the mmh3 C extension) over the
# first 100,000 ids, when python3 with mmh3 is available.
#
# Usage: bench/assign-throughput.sh [UNITS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
units="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p strata-cli
strata="$CARGO_TARGET_DIR/release/strata"

# Deterministic inputs: ids and contexts derived from the line number.
awk -v n="$units" 'BEGIN { for (i = 0; i < n; i++) printf "user-%d\n", i }' > "$work/ids.txt"
awk -v n="$units" 'BEGIN {
  split("US CA GB DE FR", c, " "); split("ios android", p, " ");
  for (i = 0; i < n; i++)
    printf "{\"user_id\":\"user-%d\",\"device_id\":\"dev-%x\",\"country\":\"%s\",\"platform\":\"%s\",\"app_version\":\"4.%d.0\",\"account_age_days\":%d}\n",
      i, i, c[i % 5 + 1], p[i % 2 + 1], i % 6, i % 400
}' > "$work/contexts.ndjson"

best() { # best wall time of 3 runs of "$@", in seconds
  local best=""
  for _ in 1 2 3; do
    local start end t
    start=$(date +%s.%N); "$@" > /dev/null; end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  echo "$best"
}

t_units=$(best "$strata" assign --config examples/snapshot.json --units "$work/ids.txt")
t_ctx=$(best "$strata" assign --config examples/snapshot.json --contexts "$work/contexts.ndjson")
printf 'strata assign --units    %d units: %.3f s, %.0f units/s\n' "$units" "$t_units" "$(echo "$units / $t_units" | bc -l)"
printf 'strata assign --contexts %d units: %.3f s, %.0f units/s\n' "$units" "$t_ctx" "$(echo "$units / $t_ctx" | bc -l)"

if python3 -c 'import mmh3' 2>/dev/null; then
  head -n 100000 "$work/ids.txt" > "$work/ids100k.txt"
  t_py=$(best python3 testdata/assignment/reference.py assign --config examples/snapshot.json --units "$work/ids100k.txt")
  printf 'peer: reference.py assign --units 100000 units: %.3f s, %.0f units/s\n' "$t_py" "$(echo "100000 / $t_py" | bc -l)"
else
  echo "peer skipped: python3 with mmh3 not available"
fi
