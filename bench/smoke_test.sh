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
for name in ("ryw/leader", "ryw/follower", "caught-up/leader", "caught-up/follower"):
    row = rows[f"R1/{name}/walship-3node"]
    assert row["items_per_second"] > 0 and row["p50_us"] > 0, row
for name in ("connect/plain", "connect/secret", "connect/tls", "w1/plain", "w1/secret", "w1/tls"):
    row = rows[f"S1/{name}/walship-3node"]
    assert row["items_per_second"] > 0 and row["p50_us"] > 0, row
    if not name.endswith("plain"):
        assert row["ratio_to_plain"] > 0, row
PY
for f in throughput.svg lag-p99.svg sync-writes.svg recovery.svg latency.svg \
         lag-cdf-depth-1.svg lag-time-depth-1.svg lag-cdf-batch-64.svg; do
  test -s "$out/plots/$f" || { echo "missing or empty plot $f"; exit 1; }
  grep -q "<svg" "$out/plots/$f"
done
# The growth curves, at a two-hundredth of their sizes: every point measured, and plotted.
"$bench" --growth --growth-scale 0.005 --cap-s 2 --json "$out/growth.json" --plots "$out/growth" \
    > "$out/growth.txt"
python3 - "$out/growth.json" <<'PY'
import json, sys
rows = {b["name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]}
points = ["base", "keys:10000", "keys:50000", "values:1024", "values:16384", "followers:1",
          "followers:4", "clients:4", "clients:16"]
for p in points:
    w1 = rows[f"growth/{p}/W1/depth:64"]
    assert w1["items_per_second"] > 0 and w1["mb_per_s"] > 0, w1
    assert w1["lag_p99_ms/worst"] > 0, w1
    assert rows[f"growth/{p}/W4"]["catchup_s"] > 0, rows[f"growth/{p}/W4"]
for p in ("base", "clients:4", "clients:16"):
    assert rows[f"growth/{p}/W1/depth:1"]["items_per_second"] > 0
assert "lag_p99_ms/n5" in rows["growth/followers:4/W1/depth:64"], "four followers probed"
PY
for f in keys values followers clients; do
  grep -q "<svg" "$out/growth/growth-$f.svg" || { echo "no growth-$f.svg"; exit 1; }
done
echo "walship-bench smoke: JSON accepted by compare.py, plots written"
