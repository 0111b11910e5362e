#!/usr/bin/env bash
# Installs walship's Debian 12 packages (only when one is missing) and builds into build/.
# Idempotent: a second run with nothing changed takes seconds.
#   WALSHIP_BUILD_DIR  build directory (default: build)
#   WALSHIP_SANITIZE=1 build with AddressSanitizer + UndefinedBehaviorSanitizer
#   WALSHIP_SETUP_ONLY=1 install the packages, build nothing
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake ninja-build g++ pkg-config python3
  librocksdb-dev rocksdb-tools capnproto libcapnp-dev libabsl-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  zlib1g-dev libssl-dev openssl libjemalloc-dev libgtest-dev libgmock-dev libbenchmark-dev libbenchmark-tools python3-scipy
  libhiredis-dev libpq-dev
  gnuplot-nox
  iproute2 iptables faketime util-linux curl
  etcd-server)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ "${WALSHIP_SETUP_ONLY:-0}" == 1 ]] && exit 0  # packages only (scripts/fuzz.sh)

build=${WALSHIP_BUILD_DIR:-build}
sanitize=OFF
[[ "${WALSHIP_SANITIZE:-0}" == 1 ]] && sanitize=ON
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALSHIP_SANITIZE=$sanitize >/dev/null
cmake --build "$build" -j 2
