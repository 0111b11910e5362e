#!/usr/bin/env bash
# The fault suite's long run (docs/fault-testing.md): MINUTES of faults on a three-node
# cluster of real processes, then the checker. Prints the table of faults and findings; on a
# finding, the seed and the history to replay it, and exits 1.
#   SEED=N  the fault schedule's seed (default: from the clock, printed)
#   FAILOVER=1  automatic failover on (docs/failover.md): dead leaders are replaced by vote
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: scripts/soak.sh MINUTES}
bash scripts/setup.sh
cd tests/fault
exec python3 run.py --seconds $((minutes * 60)) ${SEED:+--seed "$SEED"} --threads 4 \
  ${FAILOVER:+--failover}
