#!/usr/bin/env bash
# The main job: builds walship, starts the cluster of examples/cluster.toml on 127.0.0.1
# (one leader, two followers), writes and reads keys through the CLI, prints each node's
# status, and stops every node cleanly with SIGTERM. Data lives in examples/data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin=build/tools
config=examples/cluster.toml
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT

# The cluster secret the config names, made once (docs/operations.md).
if [[ ! -f examples/data/secret ]]; then
  mkdir -p examples/data
  (umask 077; openssl rand -base64 32 > examples/data/secret)
fi
for node in n1 n2 n3; do
  "$bin/walshipd" --config "$config" --node "$node" 2> "examples/$node.log" &
  pids+=($!)
done
# The leader answers status at once; after a restart it leads once its followers have told
# it how far they are (docs/replication.md).
for _ in $(seq 100); do
  "$bin/walship" --cluster "$config" status --json 2>/dev/null | grep -q '"role":"leader"' && break
  sleep 0.1
done

w() { echo "\$ walship $*"; "$bin/walship" --cluster "$config" "$@"; }
w put greeting 'hello, world'
w put 'binary\x00key' 'value\xff'
printf 'put fruit:apple red\nput fruit:banana yellow\nput fruit:cherry dark\\sred\n' > /tmp/walship-demo-batch
echo "\$ walship write < batch   # $(wc -l < /tmp/walship-demo-batch) ops, applied atomically"
"$bin/walship" --cluster "$config" write < /tmp/walship-demo-batch
w get greeting
w --mode async put fast 1         # this write does not wait for a follower
w del counter
w --if-absent put counter 1       # conditional writes: compare-and-set
w --if-value 1 put counter 2
w --if-value 1 put counter 3 || echo "(exit $?: counter no longer holds 1; nothing written)"
w get --committed counter         # only what a follower holds, as the cluster's mode asks
w --node n2 put via-follower 1    # refused by the follower; the CLI follows the leader hint
sleep 0.3
w --node n3 scan --prefix fruit:  # read from a follower
w --node n2 get greeting
w status --all
echo "\$ walship --endpoint 127.0.0.1:7101 get greeting   # no secret: refused"
"$bin/walship" --endpoint 127.0.0.1:7101 get greeting || echo "(exit $?)"
# What Prometheus and a load balancer see (docs/operations.md).
pattern='^walship_(role\{role="leader"|replication_lag_seconds|writes_total\{result="ok")'
echo "\$ curl -s 127.0.0.1:8101/metrics | grep -E '$pattern'"
curl -s 127.0.0.1:8101/metrics | grep -E "$pattern"
for node in 1 2 3; do
  echo "node n$node: /leader $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:810$node/leader)," \
       "/replica?lag=1 $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:810$node/replica?lag=1")"
done
echo "logs: examples/n1.log examples/n2.log examples/n3.log"
