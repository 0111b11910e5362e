#!/bin/bash
# Runs the replication simulation over many seeds (default 20,000), in as many shards as the
# machine has cores. A failing seed prints the command that replays it.
#   scripts/sim-soak.sh [SEEDS] [BUILD_DIR]
set -euo pipefail
seeds="${1:-20000}"
build="${2:-build}"
shards="$(nproc)"
bin="$build/replication/replication_sim_test"
[ -x "$bin" ] || { echo "no $bin: build first (scripts/setup.sh)" >&2; exit 2; }
pids=()
for ((i = 0; i < shards; i++)); do
  WALSHIP_SIM_SEEDS="$seeds" WALSHIP_SIM_SHARD="$i/$shards" "$bin" > "/tmp/sim-soak-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for ((i = 0; i < shards; i++)); do
  if ! wait "${pids[$i]}"; then
    status=1
    grep -A3 "seed " "/tmp/sim-soak-$i.log" | head -20
  fi
done
[ "$status" = 0 ] && echo "sim soak: $seeds seeds passed"
exit "$status"
