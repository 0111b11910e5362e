#!/usr/bin/env bash
# Builds walship and runs the whole test suite with ctest, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/; without the benchmark tools and
# their smoke tests, which the plain build runs). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure --timeout 900 -j 2
WALSHIP_BUILD_DIR=build-asan WALSHIP_SANITIZE=1 bash scripts/setup.sh
# The e2e harness's own status polls use the plain CLI (tests/e2e/cluster.py, POLL_CLI).
WALSHIP_SANITIZED=1 WALSHIP_POLL_BIN="$PWD/build" ASAN_OPTIONS=detect_leaks=0 \
  UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure --timeout 900 -j 2
