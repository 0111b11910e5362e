#!/usr/bin/env bash
# Fuzzes what a node reads from outside: builds the fuzz targets of tests/fuzz with clang,
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer into build-fuzz/, runs each for
# FUZZ_SECONDS (default 60) from its corpus, and merges the inputs that found new coverage
# into tests/fuzz/corpus/<target>. A crash stops the script with the input's path; replay it
# with build-fuzz/tests/fuzz/fuzz_<target> <path>. docs/fuzzing.md records the runs.
#   scripts/fuzz.sh [target ...]   targets: client_request peer_message batch config node_state
set -euo pipefail
cd "$(dirname "$0")/.."
WALSHIP_SETUP_ONLY=1 bash scripts/setup.sh
missing=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
targets=("$@")
((${#targets[@]})) || targets=(client_request peer_message batch config node_state)
seconds=${FUZZ_SECONDS:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DWALSHIP_FUZZ=ON -DWALSHIP_WERROR=OFF >/dev/null
cmake --build build-fuzz -j 2 --target "${targets[@]/#/fuzz_}"
for t in "${targets[@]}"; do
  work="build-fuzz/corpus/$t"
  mkdir -p "$work" "build-fuzz/crashes/$t"
  echo "fuzz: $t for ${seconds}s"
  "build-fuzz/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=4096 \
    -artifact_prefix="build-fuzz/crashes/$t/" -print_final_stats=1 \
    "$work" "tests/fuzz/corpus/$t"
  "build-fuzz/tests/fuzz/fuzz_$t" -merge=1 "tests/fuzz/corpus/$t" "$work" 2>&1 | tail -1
done
