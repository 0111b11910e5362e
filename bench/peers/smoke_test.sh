#!/usr/bin/env bash
# Runs walship-peers on a tiny workload (installing Redis and PostgreSQL from Debian when
# missing), checks that every workload gave a row for both systems, and that walship-bench
# sets its own rows beside them.
set -euo pipefail
peers=$1
bench=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$peers" --keys 2000 --catchup-keys 2000 --w5-keys 5000 --cap-s 2 --json "$out/peers.json" \
    --plots "$out/plots"
python3 - "$out/peers.json" <<'PY'
import json, sys
rows = {b["name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]}
want = {
    "W1/depth:1/redis": "items_per_second", "W1/pipeline:64/redis": "items_per_second",
    "W3/semi-sync:1,received/redis": "items_per_second",
    "W4/catch-up/2000-writes/redis": "catchup_s", "W5/new-follower/5000-keys/redis": "until_served_s",
    "W1/depth:1/pg": "items_per_second", "W1/depth:1,commit-off/pg": "items_per_second",
    "W1/batch:64/pg": "items_per_second", "W3/semi-sync:1,flushed,leader-fsync/pg": "items_per_second",
    "W3/semi-sync:1,applied,leader-fsync/pg": "items_per_second",
    "W4/catch-up/2000-writes/pg": "catchup_s", "W5/new-follower/5000-keys/pg": "snapshot_s",
}
for name, field in want.items():
    assert name in rows, f"no row {name}: {sorted(rows)}"
    assert rows[name].get(field, 0) > 0, f"{name}: {field} is not positive: {rows[name]}"
for name in ("W2/idle/redis", "W2/idle/pg", "W1/depth:1/redis", "W1/batch:64/pg"):
    assert rows[name].get("lag_unseen/r2") == 0 and rows[name]["lag_p99_ms/worst"] > 0, rows[name]
    assert rows[name]["read_p50_us/r1"] > 0, rows[name]
PY
for s in redis pg; do
  for r in r1 r2; do
    test -s "$out/plots/data/lag__depth-1__${s}__${r}.dat" || { echo "no lag series of $s $r"; exit 1; }
  done
done
"$bench" --workload W4 --no-baselines --catchup-keys 2000 --peers-json "$out/peers.json" \
    --plots "$out/plots" > "$out/side.txt"
grep -q "W4/catch-up/2000-writes .*catchup_s .*W4/catch-up/2000-writes/redis" "$out/side.txt" ||
    { cat "$out/side.txt"; exit 1; }
grep -q "W4/catch-up/2000-writes .*catchup_s .*W4/catch-up/2000-writes/pg" "$out/side.txt" ||
    { cat "$out/side.txt"; exit 1; }
for s in walship redis pg; do
  grep -q "catch-up/2000-writes $s" "$out/plots/recovery.svg" ||
      { echo "recovery.svg has no bar of $s"; exit 1; }
done
# walship's W1 beside theirs, in the table and in one plot.
"$bench" --workload W1 --no-baselines --keys 2000 --cap-s 2 --peers-json "$out/peers.json" \
    --plots "$out/plots" > "$out/side.txt"
grep -q "W1/depth:1/walship-3node .*ops_per_s .*W1/depth:1/redis" "$out/side.txt" ||
    { cat "$out/side.txt"; exit 1; }
for s in walship redis pg; do
  grep -q "$s r\?[0-9n]" "$out/plots/lag-cdf-depth-1.svg" ||
      { echo "lag-cdf-depth-1.svg has no line of $s"; exit 1; }
done
grep -q "depth:1 redis" "$out/plots/throughput.svg" || { echo "throughput.svg has no Redis bar"; exit 1; }
echo "walship-peers smoke: every workload measured on Redis and PostgreSQL, set beside walship's"
