#!/usr/bin/env bash
# CPU time per write of each process of a three-node cluster, during W1 one write per round
# trip. CPU per write moves far less between runs on this shared machine than ops/s does, so
# it is the figure to compare when a change should make a node cheaper.
#
#   bench/cpu-per-write.sh [LABEL] [WRITES]      (run from the repository, after a build)
#
# Starts a fresh cluster of three walshipd (127.0.0.1:7301-7303) in a temporary directory,
# warms it with 10k writes, then runs walship-bench against it for WRITES writes (default
# 40000) and prints one line: ops/s, the worst follower's lag p99, and µs of CPU (user +
# system, from /proc/<pid>/stat and time(1)) per write for the benchmark client and each node,
# each node's followed by its context switches per write (all threads, /proc/<pid>/task) and
# its write() calls per write (/proc/<pid>/io syscw): nearly all are WAL appends, one per
# RocksDB write, so on a follower it is the messages it applied per client write.
# Extra walshipd environment passes through; CPW_REPLICATION holds extra lines for the config's
# [replication] table (say CPW_REPLICATION=$'ack_delay_us = 1000\nmax_inflight_ships = 8').
# CPW_NODES=1 runs the leader alone (no followers, no lag figure), for the request path's cost.
set -euo pipefail
label=${1:-run}
writes=${2:-40000}
bin=${CPW_BIN:-build}  # CPW_BIN: another build directory, for A/B runs
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
nodes=${CPW_NODES:-3}
case "$nodes" in 1|2|3) ;; *) echo "CPW_NODES must be 1, 2 or 3, not '$nodes'" >&2; exit 2 ;; esac
{
  printf '[cluster]\nname = "cpu-per-write"\n[replication]\n%s\n' "${CPW_REPLICATION:-}"
  for i in $(seq "$nodes"); do
    role=follower
    [ "$i" = 1 ] && role=leader
    printf '[[node]]\nid = "n%d"\nlisten = "127.0.0.1:730%d"\ndata_dir = "n%d"\nrole = "%s"\n' \
      "$i" "$i" "$i" "$role"
  done
} > "$dir/cluster.toml"
for i in $(seq "$nodes"); do
  "$bin/tools/walshipd" --config "$dir/cluster.toml" --node "n$i" 2> "$dir/n$i.log" &
  pids+=($!)
done
for _ in $(seq 100); do  # every node answers within 10 s
  "$bin/tools/walship" --cluster "$dir/cluster.toml" status --all > /dev/null 2>&1 && break
  sleep 0.1
done
bench=("$bin/bench/walship-bench" --cluster "$dir/cluster.toml" --workload W1 --depth 1
       --batch 0 --pipeline 0 --no-baselines --plots "$dir/plots")
"${bench[@]}" --keys 10000 > /dev/null 2>&1  # also waits for the followers to stream
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Context switches of every thread: on this paravirtualized guest a switch costs several µs of
# kernel time, more than half of a node's CPU per write (perf), so wake-ups are worth counting.
# (A thread may end between the glob and the read: its file is then skipped.)
switches() {
  { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
    awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
iow() { awk '/syscw/ {n = $2} END {print n + 0}' /proc/"$1"/io 2>/dev/null || echo 0; }
declare -A before before_cs before_w
for p in "${pids[@]}"; do
  before[$p]=$(ticks "$p") before_cs[$p]=$(switches "$p") before_w[$p]=$(iow "$p")
done
out=$({ /usr/bin/time -f "client-cpu-s %U %S" "${bench[@]}" --keys "$writes" --cap-s 120; } 2>&1)
hz=$(getconf CLK_TCK)
line="$label $(echo "$out" | awk '/^W1\// {print "ops/s=" $2}')"
line+=" $(echo "$out" | grep -o 'lag_p99_ms/worst=[0-9.]*' | head -n 1 || true)"
line+=" client=$(echo "$out" | awk -v n="$writes" '/^client-cpu-s/ {printf "%.1fus", ($2 + $3) * 1e6 / n}')"
for i in $(seq 0 $((nodes - 1))); do
  p=${pids[$i]}
  line+=" n$((i + 1))=$(awk -v d=$(($(ticks "$p") - ${before[$p]})) -v hz="$hz" -v n="$writes" \
    'BEGIN {printf "%.1fus", d / hz * 1e6 / n}')"
  line+="/$(awk -v d=$(($(switches "$p") - ${before_cs[$p]})) -v n="$writes" \
    'BEGIN {printf "%.2fcs", d / n}')"
  line+="/$(awk -v d=$(($(iow "$p") - ${before_w[$p]})) -v n="$writes" \
    'BEGIN {printf "%.2fw", d / n}')"
done
echo "$line"
