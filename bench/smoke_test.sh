#!/usr/bin/env bash
# Runs walship-bench on a tiny workload and checks its outputs: JSON that Google Benchmark's
# compare.py accepts (comparing the run with itself), and non-empty plot files.
set -euo pipefail
bench=$1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bench" --keys 2000 --catchup-keys 2000 --w5-keys 2000 --cap-s 5 --json "$out/run.json" --plots "$out/plots"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d['benchmarks']) >= 6, d" "$out/run.json"
compare=$(ls /usr/share/benchmark/compare.py /usr/lib/python3/dist-packages/benchmark/compare.py 2>/dev/null | head -n 1 || true)
if [[ -z "$compare" ]]; then compare=$(dpkg -L libbenchmark-tools | grep '/compare.py$' | head -n 1); fi
/usr/bin/python3 "$compare" benchmarks "$out/run.json" "$out/run.json" > "$out/compare.txt"
grep -q "W1/depth:1/walship-3node" "$out/compare.txt"
python3 - "$out/run.json" <<'PY'
import json, sys
rows = {b["name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]}
for name in ("W2/idle/walship-3node", "W1/depth:1/walship-3node", "W1/batch:64/walship-3node"):
    row = rows[name]
    for f in ("n2", "n3"):
        assert row[f"lag_unseen/{f}"] == 0, row
        assert 0 < row[f"lag_p50_ms/{f}"] <= row[f"lag_p99_ms/{f}"] <= row[f"lag_max_ms/{f}"], row
        assert row[f"read_p50_us/{f}"] > 0, row
PY
for f in throughput.svg lag-p99.svg sync-writes.svg recovery.svg latency.svg \
         lag-cdf-depth-1.svg lag-time-depth-1.svg lag-cdf-batch-64.svg; do
  test -s "$out/plots/$f" || { echo "missing or empty plot $f"; exit 1; }
  grep -q "<svg" "$out/plots/$f"
done
echo "walship-bench smoke: JSON accepted by compare.py, plots written"
